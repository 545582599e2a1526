#!/usr/bin/env python3
"""Cargo.toml's rust-version is the truth: no lower than any locked dependency's, no higher than the
rustc of the nixpkgs the flake pins.

Cargo refuses to build a dependency whose `rust-version` is newer than the compiler, and Nix builds
with the pinned nixpkgs' rustc. So a dependency bump that needs a newer compiler must fail here, in
CI, and not in a user's `nix build`.

Reads `cargo metadata --locked` (every package of Cargo.lock, all targets) and
`reference/nixpkgs-pin.json` (the rustc of the pinned nixos-26.05), and checks that flake.lock pins
that same revision. Exits 1 naming what is wrong.

Usage: python3 checks/rust_version.py [--metadata FILE]   (default: runs cargo metadata)
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def version(text):
    """'1.89' or '1.89.0' -> (1, 89, 0)."""
    parts = [int(p) for p in text.strip().split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def show(v):
    return ".".join(str(p) for p in v)


def main(argv):
    if len(argv) == 2 and argv[0] == "--metadata":
        meta = json.loads(Path(argv[1]).read_text())
    elif not argv:
        out = subprocess.run(
            ["cargo", "metadata", "--locked", "--format-version", "1"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout
        meta = json.loads(out)
    else:
        print(__doc__, file=sys.stderr)
        return 2

    pin = json.loads((ROOT / "reference" / "nixpkgs-pin.json").read_text())
    rustc = version(pin["rustc"])
    lock = json.loads((ROOT / "flake.lock").read_text())
    problems = []
    locked = lock["nodes"]["nixpkgs"]["locked"]
    if locked.get("rev") != pin["locked"]["rev"] or locked.get("narHash") != pin["locked"]["narHash"]:
        problems.append(
            f"flake.lock pins nixpkgs {locked.get('rev')}, reference/nixpkgs-pin.json says "
            f"{pin['locked']['rev']} (rustc {pin['rustc']}): update one of them"
        )

    members = set(meta["workspace_members"])
    ours = [p for p in meta["packages"] if p["id"] in members]
    deps = [p for p in meta["packages"] if p["id"] not in members]
    needed = max(
        ((version(p["rust_version"]), f"{p['name']} {p['version']}") for p in deps if p.get("rust_version")),
        default=((0, 0, 0), "no dependency"),
    )
    for p in ours:
        if not p.get("rust_version"):
            problems.append(f"{p['name']}: Cargo.toml has no rust-version")
            continue
        claimed = version(p["rust_version"])
        if claimed < needed[0]:
            problems.append(
                f"{p['name']}: rust-version {show(claimed)} is lower than {needed[1]} needs "
                f"({show(needed[0])}); raise it"
            )
        if claimed > rustc:
            problems.append(
                f"{p['name']}: rust-version {show(claimed)} is higher than the pinned nixpkgs' "
                f"rustc {show(rustc)} (reference/nixpkgs-pin.json): nix build would fail"
            )
        print(
            f"{p['name']}: rust-version {show(claimed)}; newest dependency needs {show(needed[0])} "
            f"({needed[1]}); pinned nixpkgs ships rustc {show(rustc)}"
        )
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
