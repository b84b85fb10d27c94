"""CSV import and export of a domain's mailboxes and aliases.

Import goes row by row through the same provisioning functions as the portal and commands, each
row in its own transaction: a bad row is reported with its line number and reason and the good
rows around it are kept. Addresses of any other domain are refused, so an import cannot reach
into another tenant.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from django.core.exceptions import ValidationError

from domains.models import Domain
from mailhost.addresses import AddressError, parse_address
from mailhost.sizes import format_size, parse_size

from .models import Mailbox
from .provisioning import create_alias, create_mailbox

MAILBOX_COLUMNS = ["address", "password", "quota", "display_name"]
ALIAS_COLUMNS = ["address", "destinations"]
EXPORT_MAILBOX_COLUMNS = ["address", "display_name", "quota", "used_bytes", "active"]


@dataclass
class RowResult:
    line: int
    address: str
    ok: bool
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def _address_in(domain: Domain, value: str) -> str:
    """`bob` or `bob@domain` -> `bob@domain`; `@domain` stays the catch-all; other domains refused."""
    value = value.strip()
    if not value:
        raise ValidationError("the address is empty")
    if value.startswith("@"):
        value = "catchall" + value
        catch_all = True
    else:
        catch_all = False
        value = value if "@" in value else f"{value}@{domain.name}"
    try:
        addr = parse_address(value)
    except AddressError as exc:
        raise ValidationError(str(exc)) from exc
    if addr.domain != domain.name:
        raise ValidationError(f"{addr.domain} is not {domain.name}: import into that domain's own page")
    return f"@{addr.domain}" if catch_all else str(addr)


def _rows(text: str, columns: list[str], first_line: int) -> Iterator[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(text))
    line = first_line - 1
    for raw in reader:
        line += 1
        if not raw or not any(cell.strip() for cell in raw) or raw[0].strip().lower() == "address":
            continue
        yield line, dict(zip(columns, (cell.strip() for cell in raw + [""] * len(columns)), strict=False))


def _one(line: int, address: str, action) -> RowResult:
    try:
        message = action()
    except ValidationError as exc:
        return RowResult(line, address, False, " ".join(exc.messages))
    return RowResult(line, address, True, message)


def import_mailboxes(domain: Domain, text: str, first_line: int = 1) -> list[RowResult]:
    results = []
    for line, row in _rows(text, MAILBOX_COLUMNS, first_line):
        def action(row=row):
            address = _address_in(domain, row["address"])
            try:
                quota = parse_size(row["quota"]) if row["quota"] else None
            except ValueError as exc:
                raise ValidationError(str(exc)) from exc
            create_mailbox(address, row["password"], quota=quota, display_name=row["display_name"])
            return f"created {address}"
        results.append(_one(line, row["address"], action))
    return results


def import_aliases(domain: Domain, text: str, first_line: int = 1) -> list[RowResult]:
    results = []
    for line, row in _rows(text, ALIAS_COLUMNS, first_line):
        def action(row=row):
            address = _address_in(domain, row["address"])
            destinations = row["destinations"].replace(";", " ").replace(",", " ").split()
            create_alias(address, destinations)
            return f"created {address}"
        results.append(_one(line, row["address"], action))
    return results


class _Echo:
    def write(self, value: str) -> str:
        return value


def export_mailboxes(domain: Domain) -> Iterable[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_MAILBOX_COLUMNS)
    for mb in Mailbox.objects.filter(domain=domain).order_by("local_part").iterator(chunk_size=2000):
        yield writer.writerow([f"{mb.local_part}@{domain.name}", mb.display_name,
                               format_size(mb.quota) if mb.quota else "0", mb.used_bytes, mb.active])


def export_aliases(domain: Domain) -> Iterable[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(ALIAS_COLUMNS)
    for alias in domain.aliases.order_by("local_part").iterator(chunk_size=2000):
        yield writer.writerow([f"{alias.local_part}@{domain.name}", " ".join(alias.destinations)])
