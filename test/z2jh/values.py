"""The Z2JH values of docs/install.md's step 4, against the NOTES and an admin's file.

    values.py check NOTES.txt BLOCK.yaml   the values block the NOTES printed (from
                                           "hub:" to the prose after it) parses to the
                                           same values as the guide's block: one source
    values.py merge VALUES.yaml BLOCK.yaml merges the block into the admin's values file
                                           as the guide says ("merge"; a list such as
                                           profileList gets the block's entries appended)

Exits 1 with the difference when they differ.
"""

import re
import sys

import yaml


def notes_block(text):
    lines, inside = [], False
    for line in text.splitlines():
        if not inside and line == "hub:":
            inside = True
        if inside:
            if re.match(r"^ {0,3}[A-Z(]", line):  # the NOTES' prose after the block
                break
            lines.append(line)
    if not lines:
        sys.exit("values.py: the NOTES print no block starting with 'hub:'")
    return "\n".join(lines) + "\n"


def merge(base, extra):
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for k, v in extra.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(extra, list):
        return base + extra
    return extra


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("check", "merge"):
        sys.exit(__doc__)
    with open(sys.argv[3]) as f:
        block = yaml.safe_load(f)
    if sys.argv[1] == "check":
        with open(sys.argv[2]) as f:
            notes = yaml.safe_load(notes_block(f.read()))
        if notes != block:
            sys.exit("values.py: docs/install.md's Z2JH values differ from the NOTES':\n"
                     f"NOTES: {notes!r}\ndocs:  {block!r}")
        print("docs/install.md's Z2JH values = the NOTES' (parsed)")
        return
    with open(sys.argv[2]) as f:
        base = yaml.safe_load(f) or {}
    with open(sys.argv[2], "w") as f:
        yaml.safe_dump(merge(base, block), f, sort_keys=False)


if __name__ == "__main__":
    main()
