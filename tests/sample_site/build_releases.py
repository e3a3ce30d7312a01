"""Assemble the sample site's release trees: the app (app/) plus each release's migrations.

    python tests/sample_site/build_releases.py DEST

writes DEST/<version>/ for every release in RELEASES below, each a complete tree that
opspack.platform.release_artifact packs: app.py, VERSION, migrations/, and HEALTH_FAILS for
the release that fails its health check on purpose.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# version -> (directory with its migrations, fails its health check)
RELEASES = {
    "1.0.0": ("v1", False),
    "2.0.0": ("v2", False),
    "2.1.0": ("v2", True),
    "3.0.0": ("v3-bad-migration", False),
}


def build(dest: Path) -> list[Path]:
    made = []
    for version, (migrations, health_fails) in RELEASES.items():
        tree = dest / version
        shutil.rmtree(tree, ignore_errors=True)
        shutil.copytree(HERE / "app", tree, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(HERE / migrations / "migrations", tree / "migrations")
        (tree / "VERSION").write_text(version + "\n")
        if health_fails:
            (tree / "HEALTH_FAILS").write_text("this release fails its health check on purpose\n")
        made.append(tree)
    return made


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for tree in build(Path(sys.argv[1])):
        print(tree)
