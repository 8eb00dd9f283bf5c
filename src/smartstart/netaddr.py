"""Client addresses as the database stores them (`inet` columns)."""

from __future__ import annotations

import ipaddress

import psycopg
from psycopg.types.string import TextLoader

# `inet` values read back as the text PostgreSQL prints ("203.0.113.7"), not ipaddress
# objects: rows reach JSON and tables unchanged whichever module selected them.
psycopg.adapters.register_loader("inet", TextLoader)


def ip_or_none(value: str | None) -> str | None:
    """The address in canonical form, or None for anything that is not one ("testclient")."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    # inet has no IPv6 zone ("fe80::1%eth0"): the address without it.
    return str(address).partition("%")[0]
