"""A throwaway RabbitMQ vhost for tests and drills, so they never touch anyone else's queues."""
from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from contextlib import contextmanager

HOST, PORT = "127.0.0.1", 5672


def rabbitmq_answers(host: str = HOST, port: int = PORT, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable_reason() -> str | None:
    """Why the RabbitMQ drills and tests cannot run here, or None when they can."""
    if not rabbitmq_answers():
        return f"RabbitMQ does not answer on {HOST}:{PORT}"
    if not shutil.which("rabbitmqctl"):
        return "rabbitmqctl is not installed (needed to make a throwaway vhost)"
    return None


@contextmanager
def temporary_vhost(prefix: str = "lpr-test", user: str = "guest", password: str = "guest"):
    """Yields an amqp:// URL of a new vhost (guest has every permission); deleted afterwards."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"], check=True,
                       capture_output=True, timeout=60)
        yield f"amqp://{user}:{password}@{HOST}:{PORT}/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60)
