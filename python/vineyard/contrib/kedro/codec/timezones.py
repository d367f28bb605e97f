"""Time zones as JSON, never as pickles.

A zone is stored as one of ``{"zoneinfo": key}``, ``{"pytz": zone}``,
``{"pytz_fixed": minutes}``, ``{"fixed": microseconds, "name": name}`` (a
``datetime.timezone``) or ``{"pandas": string}`` (what pandas itself names
the zone, e.g. ``"dateutil/Europe/Paris"``). Rebuilding one only reads time
zone data. A zone that none of these gives back exactly (same type, equal)
has no spec, and the caller stores its values as a pickle object instead.
"""

from __future__ import annotations

import datetime
from typing import Any

import pandas as pd


def _spec(tz: Any) -> dict | None:
    t = type(tz)
    mod = t.__module__ or ""
    if t is datetime.timezone:
        return {"fixed": tz.utcoffset(None) // datetime.timedelta(microseconds=1), "name": tz.tzname(None)}
    if mod == "zoneinfo" and getattr(tz, "key", None):
        return {"zoneinfo": tz.key}
    if mod.startswith("pytz"):
        if isinstance(getattr(tz, "zone", None), str):
            return {"pytz": tz.zone}
        minutes = getattr(tz, "_minutes", None)
        return {"pytz_fixed": minutes} if type(minutes) is int else None
    try:
        from pandas._libs.tslibs.timezones import get_timezone
    except ImportError:  # pragma: no cover - every supported pandas has it
        return None
    name = get_timezone(tz)
    return {"pandas": name} if isinstance(name, str) else None


def tz_from_spec(spec: Any) -> Any:
    """The zone a spec names (ValueError/TypeError/KeyError when it is bad)."""
    if not isinstance(spec, dict) or len(spec) not in (1, 2):
        raise ValueError(f"bad time zone spec {spec!r}")
    if "fixed" in spec:
        us, name = spec["fixed"], spec.get("name")
        if type(us) is not int or not isinstance(name, str):
            raise ValueError(f"bad fixed offset {spec!r}")
        tz = datetime.timezone(datetime.timedelta(microseconds=us))
        return tz if tz.tzname(None) == name else datetime.timezone(datetime.timedelta(microseconds=us), name)
    if isinstance(spec.get("zoneinfo"), str):
        import zoneinfo

        return zoneinfo.ZoneInfo(spec["zoneinfo"])
    if isinstance(spec.get("pytz"), str):
        import pytz

        return pytz.timezone(spec["pytz"])
    if type(spec.get("pytz_fixed")) is int:
        import pytz

        return pytz.FixedOffset(spec["pytz_fixed"])
    if isinstance(spec.get("pandas"), str):
        return pd.DatetimeTZDtype(tz=spec["pandas"]).tz
    raise ValueError(f"bad time zone spec {spec!r}")


def tz_spec(tz: Any) -> dict | None:
    """The JSON spec of `tz`, or None when no spec gives it back exactly."""
    spec = _spec(tz)
    if spec is None:
        return None
    try:
        back = tz_from_spec(spec)
    except Exception:  # noqa: BLE001 - any failure means "no safe spec"
        return None
    return spec if type(back) is type(tz) and back == tz and str(back) == str(tz) else None


__all__ = ["tz_from_spec", "tz_spec"]
