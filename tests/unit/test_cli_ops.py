"""Issue 16 item 5, the operator's CLI: tables by default and --json for scripts, unknown
merchants refused without a trace, --dry-run on what rewrites data, exit codes by kind."""
from __future__ import annotations

import json

import fakeredis
import pytest
import redis

from service.cli import main as cli
from service.state.stores import StoreRegistry
from service.state.tokens import StoreTokens, TokenStore
from tests.conftest import TOKEN_KEY
from service.state.due_set import DueSet
from tests.unit.test_due_set_shards import entry


@pytest.fixture
def store(monkeypatch):
    client = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr("service.cli.connect", lambda settings: client)
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    return client


def test_tables_by_default_and_the_same_data_as_json_for_scripts(store, capsys):
    """Issue 16 item 5: human-readable tables by default, --json for scripts (before or after the command)."""
    StoreRegistry(store, "lpr:").set_state(7, "active")
    assert cli(["stores"]) == 0
    table = capsys.readouterr().out
    assert "merchant_id" in table and "active" in table and not table.lstrip().startswith(("[", "{"))
    assert cli(["--json", "stores"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["merchant_id"] == 7
    assert cli(["store", "7", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["merchant_id"] == 7


@pytest.mark.parametrize("argv", [["store", "999"], ["set-store", "999", "--plan-limit", "360"], ["reset-store", "999"],
                                  ["channels", "999"], ["set-channels", "999", "--policy", "first"],
                                  ["backfill", "999"], ["stats", "999"], ["forget-customer", "999", "5"]])
def test_an_unknown_merchant_is_exit_2_and_creates_nothing(store, capsys, argv):
    """Issue 16 item 5: `store 999`, `set-store 999` printed or created phantoms; now exit 2, nothing written."""
    assert cli(argv) == 2
    assert "no store 999" in capsys.readouterr().err
    assert store.keys("*") == []


def test_redis_down_is_exit_3_in_one_line(monkeypatch, capsys):
    """Issue 16 item 5: Redis or the broker unavailable is exit 3, a line, not a traceback."""
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    assert cli(["stores"]) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "hunter2" not in err
    assert err.startswith("unavailable: Redis at redis://127.0.0.1:1 did not answer")


def test_reshard_dry_run_counts_and_moves_nothing(store, monkeypatch, capsys):
    """Issue 16 item 5: --dry-run on reshard-due-set."""
    DueSet(store, "lpr:", shards=1).schedule([(100, entry(m)) for m in range(6)])
    monkeypatch.setenv("DUE_SET_SHARDS", "3")
    before = {key: store.zrange(key, 0, -1, withscores=True) for key in store.keys("*") if store.type(key) == "zset"}
    assert cli(["--json", "reshard-due-set", "--from", "1", "--dry-run"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["moved"], report["dry_run"]) == (4, True)
    assert {key: store.zrange(key, 0, -1, withscores=True) for key in before} == before
    assert cli(["--json", "reshard-due-set", "--from", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["moved"] == 4


def test_rotate_token_keys_dry_run_checks_every_record_and_changes_nothing(store, monkeypatch, capsys):
    """Issue 16 item 5: --dry-run on rotate-token-keys: it says which stores no key can decrypt."""
    from cryptography.fernet import Fernet
    TokenStore(store, "lpr:", [TOKEN_KEY]).save(9, StoreTokens("a", "r", 2e9))
    TokenStore(store, "lpr:", [Fernet.generate_key().decode()]).save(10, StoreTokens("b", "r", 2e9))  # a lost key
    blobs = {key: store.get(key) for key in store.keys("*") if store.type(key) == "string"}
    new = Fernet.generate_key().decode()
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", f"{new},{TOKEN_KEY}")
    assert cli(["--json", "rotate-token-keys", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == {"re_encrypted": 1, "channel_settings_re_encrypted": 0,
                                                   "deployment_secrets_re_encrypted": 0,
                                                   "dry_run": True, "undecryptable_stores": [10]}
    assert {key: store.get(key) for key in blobs} == blobs
    assert cli(["rotate-token-keys"]) == 1  # failed: store 10's record cannot be re-encrypted
    assert "stores [10]" in capsys.readouterr().err
    assert TokenStore(store, "lpr:", [new]).load(9).access_token == "a"


def test_progress_bars_only_for_a_person_at_a_terminal(store, monkeypatch):
    """Issue 16 item 5: progress bars (rich) on reshard-due-set, rotate-token-keys and backfill --watch,
    never mixed into --json output or a pipe."""
    from service import cli as module
    seen = []
    real = module.progress_bar

    def spy(description, total, shown):
        seen.append((description, shown))
        return real(description, total, False)
    monkeypatch.setattr(module, "progress_bar", spy)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    StoreRegistry(store, "lpr:").set_state(7, "active")
    assert cli(["reshard-due-set", "--from", "1"]) == 0
    assert cli(["rotate-token-keys"]) == 0
    assert cli(["--json", "rotate-token-keys"]) == 0
    assert seen == [("shards", True), ("stores", True), ("stores", False)]
    monkeypatch.setattr("service.clients.queue.EventQueue.publish", lambda self, task, args: None)
    monkeypatch.setattr("service.ops.backfill.progress", lambda *a, **k: {"state": "done", "customers_read": 3,
                                                                      "customers_listed": 3})
    assert cli(["backfill", "7", "--watch"]) == 0
    assert seen[-1] == ("customers read", True)


def test_forget_customer_dry_run_counts_and_erases_nothing(store, capsys):
    """Issue 16 item 5: --dry-run on forget-customer."""
    from service.state.keys import Keys
    StoreRegistry(store, "lpr:").set_state(7, "active")
    store.hset(Keys("lpr:").store(7).profile(5), mapping={"customer_id": "5", "points": "100"})
    keys_before = sorted(store.keys("*"))
    assert cli(["--json", "forget-customer", "7", "5", "--dry-run"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["dry_run"], report["forgotten"], report["keys_deleted"]) == (True, False, 1)
    assert sorted(store.keys("*")) == keys_before


def _audit(store) -> list[dict]:
    return [json.loads(raw) for raw in store.lrange("lpr:admin:audit", 0, -1)]


def test_every_cli_change_is_audited_with_names_never_values(store, capsys):
    """A command that changes something (set-store, set-channels, dead-letters replay, ...) is
    audited as the admin API's changes are: who (cli:<user>), the command and its ids, the exit
    status, the names of the options given; never a value (a provider token here). Reads are
    not (personal-data reads have their own entries: export-customer, preview)."""
    StoreRegistry(store, "lpr:").set_state(7, "active")
    secret = "EAAGm0PX4ZCpsBAK-whatsapp-secret-value"
    assert cli(["set-store", "7", "--holdout-percent", "10", "--store-name", "Noura"]) == 0
    assert cli(["set-store", "7", "--holdout-percent", "99"]) == 2  # refused: 0-50
    assert cli(["set-channels", "7", "--set", f"whatsapp.access_token={secret}", "--policy", "first"]) == 0
    assert cli(["stores"]) == 0 and cli(["store", "7"]) == 0 and cli(["dead-letters", "list", "7"]) == 0
    newest_first = _audit(store)
    assert [(e["path"], e["status"], e["fields"]) for e in newest_first] == [
        ("set-channels 7", 0, ["policy", "whatsapp.access_token"]),
        ("set-store 7", 2, ["holdout_percent"]),
        ("set-store 7", 0, ["holdout_percent", "store_name"]),
    ]
    assert all(e["method"] == "CLI" and e["token"].startswith("cli:") and "access" not in e for e in newest_first)
    dumped = json.dumps(newest_first)
    assert secret not in dumped and "Noura" not in dumped


def test_a_cli_change_whose_audit_cannot_be_written_says_so(store, monkeypatch, capsys):
    """The entry is written after the change; Redis gone in between: the change stands (it was
    made), and standard error says it was not audited, without the Redis URL's password."""
    StoreRegistry(store, "lpr:").set_state(7, "active")

    def gone(self, entry):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    monkeypatch.setattr("service.ops.admin_guard.AuditLog.record", gone)
    assert cli(["set-store", "7", "--store-name", "Noura"]) == 0
    err = capsys.readouterr().err
    assert "`set-store 7` was not audited" in err and "Connection refused" in err
