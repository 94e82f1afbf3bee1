"""Prints the fenced block of a Markdown file that follows ``<!-- test-cluster: NAME -->``.

    docblock.py docs/install.md values > hubcredits-values.yaml

The docs' commands are run by test/cluster/run.sh as they are written, so a
document that drifts from what works fails the test. Exits 1, naming the
marker, when there is no such block.
"""

import re
import sys


def block(text, name):
    marker = r"<!-- test-cluster: " + re.escape(name) + r" -->"
    m = re.search(marker + r"\s*\n( *)```[a-z]*\n(.*?)\n *```", text, re.S)
    if not m:
        return None
    indent = len(m.group(1))  # a block in a list item is indented
    return "\n".join(line[indent:] for line in m.group(2).split("\n")) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: docblock.py FILE NAME")
    with open(sys.argv[1], encoding="utf-8") as f:
        out = block(f.read(), sys.argv[2])
    if out is None:
        sys.exit(f"docblock.py: no block marked <!-- test-cluster: {sys.argv[2]} --> "
                 f"in {sys.argv[1]}")
    sys.stdout.write(out)


if __name__ == "__main__":
    main()
