"""The sample site's own migration command, standing in for a framework's (`manage.py migrate`,
`alembic upgrade`): opspack runs it when a site sets release_migrate_command instead of, or
besides, SQL files.

  python manage.py migrate                      apply the release's framework migrations not yet applied
  python manage.py migrate --to-release DIR     revert the applied ones the release in DIR does not have

The migrations are in framework_migrations.json beside this file: [{"id", "up", "down"}], in
order; applied ones are kept in the table framework_history. DATABASE_URL comes from the
environment (the unit's, which opspack's command runner gives it).
"""

import json
import os
import sys

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))


def migrations(directory: str) -> list[dict]:
    path = os.path.join(directory, "framework_migrations.json")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def main(argv: list[str]) -> int:
    if argv[:1] != ["migrate"] or len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--to-release"):
        print(__doc__, file=sys.stderr)
        return 2
    mine = migrations(HERE)
    with psycopg2.connect(os.environ["DATABASE_URL"]) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS framework_history (id integer PRIMARY KEY)")
        cursor.execute("SELECT id FROM framework_history ORDER BY id")
        applied = [row[0] for row in cursor.fetchall()]
        if len(argv) == 1:
            for migration in mine:
                if migration["id"] not in applied:
                    cursor.execute(migration["up"])
                    cursor.execute("INSERT INTO framework_history (id) VALUES (%s)", (migration["id"],))
                    print(f"applied {migration['id']}")
        else:
            keep = {migration["id"] for migration in migrations(argv[2])}
            for migration in reversed(mine):
                if migration["id"] in applied and migration["id"] not in keep:
                    cursor.execute(migration["down"])
                    cursor.execute("DELETE FROM framework_history WHERE id = %s", (migration["id"],))
                    print(f"reverted {migration['id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
