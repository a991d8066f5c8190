"""The dependency list `cargo auditable` embeds in a binary, read back with no tool:

    python3 audit_info.py BINARY      prints the list (JSON, as rust-audit-info prints it)

cargo auditable writes it, zlib-compressed JSON, into an ELF section named `.dep-v0`
(`{"packages": [{"name", "version", "source", "kind", "dependencies": [index...],
"root"}...]}`); `strip` keeps it. This reads the section headers with `struct` and
inflates the section with `zlib`, so scripts/check-release and scripts/sbom need neither
rust-audit-info nor objcopy. Exits non-zero with the reason when BINARY is not ELF or
carries no list. Imported by scripts/lib/sbom.py and check_sbom.py as `read(path)`.
"""
import json
import struct
import sys
import zlib

SECTION = b".dep-v0"
LIMIT = 8 << 20  # inflated size cap: the list is a few KB


class NoList(Exception):
    """BINARY has no readable embedded list."""


def read(path):
    """The embedded list of the ELF binary at `path`, as a dict."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF":
        raise NoList(f"{path}: not an ELF binary")
    wide = {1: False, 2: True}.get(data[4])
    order = {1: "<", 2: ">"}.get(data[5])
    if wide is None or order is None:
        raise NoList(f"{path}: unknown ELF class or byte order")
    try:
        if wide:
            shoff, = struct.unpack_from(order + "Q", data, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", data, 0x3A)
            entry = order + "IIQQQQIIQQ"
        else:
            shoff, = struct.unpack_from(order + "I", data, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", data, 0x2E)
            entry = order + "IIIIIIIIII"
        sections = [struct.unpack_from(entry, data, shoff + i * shentsize) for i in range(shnum)]
        # (name, type, flags, addr, offset, size, ...)
        names_at, names_size = sections[shstrndx][4], sections[shstrndx][5]
        names = data[names_at:names_at + names_size]
    except (struct.error, IndexError) as e:
        raise NoList(f"{path}: malformed ELF section headers ({e})") from None
    for s in sections:
        name = names[s[0]:names.find(b"\0", s[0])]
        if name == SECTION:
            raw = data[s[4]:s[4] + s[5]]
            try:
                inflater = zlib.decompressobj()
                text = inflater.decompress(raw, LIMIT)
                if inflater.unconsumed_tail:
                    raise NoList(f"{path}: {SECTION.decode()} inflates past {LIMIT} bytes")
                return json.loads(text)
            except (zlib.error, ValueError) as e:
                raise NoList(f"{path}: {SECTION.decode()} is not zlib-compressed JSON ({e})") from None
    raise NoList(f"{path}: no {SECTION.decode()} section (not built with `cargo auditable`)")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: audit_info.py BINARY")
    try:
        json.dump(read(sys.argv[1]), sys.stdout)
    except (NoList, OSError) as e:
        sys.exit(str(e))
    print()


if __name__ == "__main__":
    main()
