"""Reads rows of Salla's loyalty-points history into lots. Pure functions.

One row per earning lot, with no row id (see the OpenAPI contract in
tests/fixtures/salla/loyalty-points.openapi.yaml). Observed value shapes that we accept:
order_id/reference_id as int, string or null; used_at as {}, null or a date string;
notes absent; expiry_date "YYYY-MM-DD HH:MM:SS" with no zone, read in the zone that
created_at names (else the store's zone).
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


class LotError(ValueError):
    """A history row we cannot read; the message says which field."""


@dataclass(frozen=True)
class Lot:
    key: str  # stable identity of the lot across reads (Salla gives rows no id)
    name: str
    points: int
    used_points: int
    status: str
    created_at: datetime
    expires_at: datetime  # timezone-aware
    order_id: str | None
    reference_id: str | None

    @property
    def remaining(self) -> int:
        """Points still usable; rows recording deductions may carry other signs, so never below 0."""
        return max(self.points - self.used_points, 0)

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "name": self.name,
            "points": self.points,
            "used_points": self.used_points,
            "remaining_points": self.remaining,
            "status": self.status,
            "expires_at": self.expires_at.isoformat(),
            "order_id": self.order_id,
            "reference_id": self.reference_id,
        }


def parse_lot(row: Any, default_zone: str = "Asia/Riyadh") -> Lot:
    if not isinstance(row, dict):
        raise LotError("row is not an object")
    zone_name, created_at = _created_at(row.get("created_at"), default_zone)
    expiry_text = row.get("expiry_date")
    if not isinstance(expiry_text, str):
        raise LotError("expiry_date is missing")
    expires_at = _parse_local(expiry_text, zone_name, "expiry_date")
    name = row.get("name") if isinstance(row.get("name"), str) else ""
    order_id = _optional_id(row.get("order_id"))
    reference_id = _optional_id(row.get("reference_id"))
    points = _whole(row.get("points"), "points")
    identity = "|".join([created_at.isoformat(), expiry_text.strip(), str(points), order_id or "", reference_id or "", name])
    return Lot(
        key=hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16],
        name=name,
        points=points,
        used_points=_whole(row.get("used_points", 0), "used_points"),
        status=row.get("status") if isinstance(row.get("status"), str) else "",
        created_at=created_at,
        expires_at=expires_at,
        order_id=order_id,
        reference_id=reference_id,
    )


def parse_history(rows: list, default_zone: str = "Asia/Riyadh") -> tuple[list[Lot], list[str]]:
    """All readable lots, plus one message per row that could not be read (never raises)."""
    lots, problems = [], []
    for index, row in enumerate(rows):
        try:
            lots.append(parse_lot(row, default_zone))
        except LotError as exc:
            problems.append(f"row {index}: {exc}")
    return lots, problems


def _created_at(value: Any, default_zone: str) -> tuple[str, datetime]:
    zone_name = default_zone
    if isinstance(value, dict):
        if isinstance(value.get("timezone"), str) and _zone(value["timezone"]) is not None:
            zone_name = value["timezone"]
        text = value.get("date")
    else:
        text = value
    if not isinstance(text, str):
        raise LotError("created_at is missing")
    return zone_name, _parse_local(text, zone_name, "created_at")


def _parse_local(text: str, zone_name: str, field: str) -> datetime:
    text = text.strip()
    for fmt in _DATE_FORMATS:
        try:
            naive = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return naive.replace(tzinfo=_zone(zone_name))
    raise LotError(f"{field} {text!r} is not a date")


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _optional_id(value: Any) -> str | None:
    if value is None or isinstance(value, (bool, dict, list)):
        return None
    text = str(value).strip()
    return text or None


def _whole(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise LotError(f"{field} is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None and number.is_integer():
            return int(number)
    raise LotError(f"{field} is not a whole number")


# -- a lot as stored with the customer's last read (workers/reminding.py), and back -----------
# The last read's lots, kept for every customer: one short row per lot (issue 18, about half the
# previous JSON of named fields, which is still read: a deployed Redis holds it). Shorter still
# since (issue 18 goal 1, memory2): the expiry as unix seconds in the record's zone offset `z`
# (the ISO text only for a lot of another offset or with fractions of a second), the name and
# status as their index in _WORDS when they are one of Salla's known words, trailing nulls left
# off. Rows of the previous form (ISO text, words in full, every field) read as before.
_LOT_ROW = ("key", "name", "points", "used_points", "status", "created_at", "expires_at", "order_id", "reference_id")
# Append only: a stored row names a word by its index here.
_WORDS = ("", "مخصصة", "مؤكدة")


def _word(text: str) -> str | int:
    return _WORDS.index(text) if text in _WORDS else text


def _lots_json(lots: list[Lot], read_at: datetime) -> str:
    rows, offset = _rows(lots)
    record = {"r": read_at.timestamp(), "l": rows}
    if offset is not None:
        record["z"] = offset
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _rows(lots: list[Lot]) -> tuple[list[list], int | None]:
    """Each lot's short row, and the zone offset (seconds) its unix expiries are read in."""
    offset = lots[0].expires_at.utcoffset() if lots else None
    rows = []
    for lot in lots:
        expires = lot.expires_at
        compact = offset is not None and expires.utcoffset() == offset and expires.microsecond == 0
        # created_at only made the lot's key (service/domain/loyalty.py): unix seconds do, in the expiry's zone.
        row = [lot.key, _word(lot.name), lot.points, lot.used_points, _word(lot.status),
               int(lot.created_at.timestamp()), int(expires.timestamp()) if compact else expires.isoformat(),
               lot.order_id, lot.reference_id]
        while row[-1] is None:
            row.pop()
        rows.append(row)
    return rows, (int(offset.total_seconds()) if offset is not None else None)


# The same lots as fields of the customer's profile hash (service/state/last_read.py), where the
# last read is kept since issue 18 goal 1 (one key a customer fewer: ~150 bytes of Redis each).
# `L` = the read's time in whole milliseconds, `L.` = the zone offset (seconds) of the unix
# expiries, and one field per lot, `L<its key>`: the key's 8 bytes in URL-safe base64 (11
# characters, not 16 hex digits; a key of another shape as `L:<key>`); its value the JSON values,
# without the brackets, of
#   place in the read, points, expiry, created_at, order_id, used_points, reference_id, name, status
# with the times as seconds from the read (an expiry of another zone in ISO text, as above), an
# id of digits only as a number, and what ends the row at its usual value (none used, no
# reference, Salla's usual name and status) left off. Each field must fit Redis's listpack (64
# bytes by default), or the whole profile would become a hash table: a read that does not fit is
# kept as the JSON above.
LOTS_FIELD = "L"
LOTS_ZONE_FIELD = "L."
LISTPACK_VALUE_BYTES = 64
LOTS_IN_PROFILE_MAX = 100
_FIELD_ROW = ("points", "expires_at", "created_at", "order_id", "used_points", "reference_id", "name", "status")
_FIELD_USUAL = {"used_points": 0, "reference_id": None, "name": 1, "status": 2}  # name, status: _WORDS


def _short_key(key: str) -> str:
    if len(key) != 16 or key.strip("0123456789abcdef"):
        return ":" + key  # not one of ours (parse_lot): as it is, after a character base64 never has
    return base64.urlsafe_b64encode(bytes.fromhex(key)).decode().rstrip("=")


def _hex_key(short: str) -> str:
    return short[1:] if short.startswith(":") else base64.urlsafe_b64decode(short + "=").hex()


def _id_number(value):
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() \
        and str(int(value)) == value else value


def _lots_fields(lots: list[Lot], read_at: datetime) -> dict[str, str] | None:
    """The read as profile fields, or None when one of them would not fit a listpack."""
    if len(lots) > LOTS_IN_PROFILE_MAX:
        return None
    rows, offset = _rows(lots)
    read_ms = round(read_at.timestamp() * 1000)
    base = read_ms // 1000
    fields = {LOTS_FIELD: str(read_ms)}
    if offset is not None:
        fields[LOTS_ZONE_FIELD] = str(offset)
    for place, row in enumerate(rows):
        key = _short_key(row[0])
        item = dict(zip(_LOT_ROW, row + [None] * (len(_LOT_ROW) - len(row))))
        item["created_at"] -= base
        if isinstance(item["expires_at"], int):
            item["expires_at"] -= base
        item["order_id"], item["reference_id"] = _id_number(item["order_id"]), _id_number(item["reference_id"])
        value = [item[name] for name in _FIELD_ROW]
        while len(value) > 4 and value[-1] == _FIELD_USUAL[_FIELD_ROW[len(value) - 1]]:
            value.pop()
        fields[LOTS_FIELD + key] = json.dumps([place, *value], ensure_ascii=False, separators=(",", ":"))[1:-1]
    if len(fields) != len(rows) + 1 + (offset is not None):  # two lots of one key: the JSON form keeps both
        return None
    if any(len(name.encode()) > LISTPACK_VALUE_BYTES or len(value.encode()) > LISTPACK_VALUE_BYTES
           for name, value in fields.items()):
        return None
    return fields


def is_lots_field(name: str) -> bool:
    """A profile field that belongs to the last read (the profile's own names are lower case)."""
    return name.startswith(LOTS_FIELD)


def _lots_from_fields(raw: dict) -> tuple[float, list[Lot]] | None:
    """The read kept in a profile hash (`raw`: its fields, str), None when it holds none."""
    if LOTS_FIELD not in raw:
        return None
    read_ms = int(raw[LOTS_FIELD])
    base = read_ms // 1000
    offset = int(raw[LOTS_ZONE_FIELD]) if LOTS_ZONE_FIELD in raw else None
    placed = sorted((json.loads("[" + value + "]"), _hex_key(name[len(LOTS_FIELD):])) for name, value in raw.items()
                    if is_lots_field(name) and name not in (LOTS_FIELD, LOTS_ZONE_FIELD))
    lots = []
    for value, key in placed:
        item = {**_FIELD_USUAL, **dict(zip(_FIELD_ROW, value[1:]))}
        item["created_at"] += base
        if isinstance(item["expires_at"], int):
            item["expires_at"] += base
        for name in ("order_id", "reference_id"):
            if isinstance(item[name], int):
                item[name] = str(item[name])
        lots.append(_lot_from_row([key, *(item[name] for name in _LOT_ROW[1:])], offset))
    return read_ms / 1000, lots


def _lot_from_row(row: list, offset: int | None = None) -> Lot:
    item = dict(zip(_LOT_ROW, list(row) + [None] * (len(_LOT_ROW) - len(row))))
    for name in ("name", "status"):
        if isinstance(item[name], int):
            item[name] = _WORDS[item[name]]
    if isinstance(item["expires_at"], str):
        zone = datetime.fromisoformat(item["expires_at"]).tzinfo
    else:
        zone = timezone(timedelta(seconds=offset or 0))
        item["expires_at"] = datetime.fromtimestamp(item["expires_at"], zone).isoformat()
    return _lot_from({**item, "created_at": datetime.fromtimestamp(item["created_at"], zone).isoformat()})


def _lots_from_json(raw: str | None) -> tuple[float, list[Lot]] | None:
    if raw is None:
        return None
    record = json.loads(raw)
    if "l" in record:
        return record["r"], [_lot_from_row(row, record.get("z")) for row in record["l"]]
    return record["read_at"], [_lot_from(item) for item in record["lots"]]  # the previous format


def _lot_record(lot: Lot) -> dict:
    return {"key": lot.key, "name": lot.name, "points": lot.points, "used_points": lot.used_points,
            "status": lot.status, "created_at": lot.created_at.isoformat(), "expires_at": lot.expires_at.isoformat(),
            "order_id": lot.order_id, "reference_id": lot.reference_id}


def _lot_from(item: dict) -> Lot:
    return Lot(key=item["key"], name=item["name"], points=item["points"], used_points=item["used_points"],
               status=item["status"], created_at=datetime.fromisoformat(item["created_at"]),
               expires_at=datetime.fromisoformat(item["expires_at"]), order_id=item["order_id"],
               reference_id=item["reference_id"])
