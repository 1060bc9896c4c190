"""Every ```python block of docs/python.md runs.

Each block is a complete program: it is written to a file and run with
/usr/bin/python3 in a fresh temporary directory (blocks may write files
there), with the environment of the other Python tests (IBVI_LIBRARY,
PYTHONPATH). A block must exit 0 within its time limit. Interactive
transcripts (first line ">>>") are not programs and are skipped; a fragment
that cannot run alone must not be fenced as ```python (use ```py), except
the ones listed in FRAGMENTS, with the reason.
"""
import os
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("IBVI_SOURCE_ROOT", os.path.join(HERE, "..", ".."))
DOC = os.path.join(ROOT, "docs", "python.md")


#: (heading, index of the block in its section from 0): why it cannot run
#: alone. Each entry is a fragment still fenced as ```python.
FRAGMENTS = {}


def python_blocks(text):
    """(line number, heading, code) of each ```python block."""
    blocks, heading, code, start = [], "", None, 0
    for number, line in enumerate(text.splitlines(), 1):
        if code is None:
            if line.startswith("#") and not line.startswith("#!"):
                heading = line.lstrip("#").strip()
            if line.strip() == "```python":
                code, start = [], number + 1
        elif line.strip() == "```":
            blocks.append((start, heading, "\n".join(code) + "\n"))
            code = None
        else:
            code.append(line)
    return blocks


class Docs(unittest.TestCase):
    def test_blocks_found(self):
        with open(DOC) as f:
            headings = [h for _, h, _ in python_blocks(f.read())]
        for want in ("A worked example", "Temperature scaling", "Deep ensembles",
                     "Regression with uncertainty", "Binary classification"):
            self.assertIn(want, headings)

    def test_every_block_runs(self):
        with open(DOC) as f:
            blocks = python_blocks(f.read())
        ran, index, previous = 0, 0, None
        for line, heading, code in blocks:
            index = index + 1 if heading == previous else 0
            previous = heading
            if code.lstrip().startswith(">>>") or (heading, index) in FRAGMENTS:
                continue
            with self.subTest(line=line, heading=heading), \
                    tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "block.py")
                with open(path, "w") as f:
                    f.write(code)
                r = subprocess.run([sys.executable, path], cwd=tmp,
                                   capture_output=True, text=True, timeout=120)
                self.assertEqual(r.returncode, 0,
                                 "docs/python.md line %d (%s):\n%s" % (
                                     line, heading, r.stderr))
                ran += 1
        self.assertGreaterEqual(ran, 6)


if __name__ == "__main__":
    unittest.main()
