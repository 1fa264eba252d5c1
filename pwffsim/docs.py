"""Reference documentation generated from the code: ``python -m pwffsim.docs`` prints the README's
scenario reference and trace schema sections (the README is checked against it by the tests)."""
from __future__ import annotations

from .scenario import reference_rows
from .trace import schema_markdown


def scenario_reference_markdown() -> str:
    lines = ["| key | type | default | meaning (unit) |", "|---|---|---|---|"]
    for key, tname, default, desc in reference_rows():
        lines.append(f"| `{key}` | {tname} | `{default}` | {desc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print("### Scenario reference\n")
    print(scenario_reference_markdown())
    print("### Trace schema\n")
    print(schema_markdown())
