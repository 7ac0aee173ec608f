"""A throwaway RabbitMQ vhost for tests and drills, so they never touch anyone else's queues."""
from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from contextlib import contextmanager

HOST, PORT = "127.0.0.1", 5672
# Debian installs rabbitmqctl in /usr/sbin, which a non-login shell's PATH (CI's, `env -i`) may lack.
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def rabbitmqctl() -> str | None:
    import os
    return shutil.which("rabbitmqctl", path=os.pathsep.join(filter(None, [os.environ.get("PATH"), _SBIN])))


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
    if not rabbitmqctl():
        return "rabbitmqctl is not installed (needed to make a throwaway vhost)"
    return None


@contextmanager
def temporary_vhost(prefix: str = "lpr-test", user: str = "guest", password: str = "guest"):
    """Yields an amqp:// URL of a new vhost (guest has every permission); deleted afterwards."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ctl = rabbitmqctl() or "rabbitmqctl"
    subprocess.run([ctl, "-q", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run([ctl, "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"], check=True,
                       capture_output=True, timeout=60)
        yield f"amqp://{user}:{password}@{HOST}:{PORT}/{vhost}"
    finally:
        subprocess.run([ctl, "-q", "delete_vhost", vhost], capture_output=True, timeout=60)
