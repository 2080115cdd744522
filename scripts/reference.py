"""Write docs/reference/reasons.md from the one reason table (policies/reasons.py).

    .venv/bin/python scripts/reference.py          rewrite the page
    .venv/bin/python scripts/reference.py --check  exit 1 if the page differs (what CI checks)

The page is generated, never edited by hand: the reason table is the one place where codes,
replies, explanations and citations live (tests/docs/test_reasons_reference.py keeps them equal).
"""

from __future__ import annotations

import sys
from pathlib import Path

from policies.reasons import REASONS, reply_for

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "reasons.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The page's Markdown."""
    families: dict[str, list[str]] = {}
    for code in REASONS:
        families.setdefault(code.partition(".")[0], []).append(code)
    lines = [
        "# Reason codes",
        "",
        "<!-- Generated from policies/reasons.py by scripts/reference.py: do not edit. -->",
        "",
        "Every refusal and every temporary failure the gateway answers carries one of these "
        "codes in brackets, e.g. `550 5.7.1 [sender.personal_domain] …`, and the decision "
        "record lists it under `reasons`. The officer quotes it with the `ref` (the decision id) "
        "to the help contact; the auditor counts by it. **reject** (5xx) means the message can "
        "never pass as it is; **tempfail** (4xx) means the sender's server keeps it and retries.",
        "",
        "The reply text is ASCII (SMTP replies are): Vietnamese without diacritics, then "
        "English. Refusal notices carry the full Vietnamese explanation. A district can cite "
        "its own directives instead of the ones below (`[citations]` in the "
        "[policy file](policy.md)).",
        "",
        "| code | reply | action |",
        "|---|---|---|",
    ]
    for code, reason in REASONS.items():
        anchor = code.replace(".", "")  # Python-Markdown keeps "_", drops "."
        lines.append(
            f"| [`{code}`](#{anchor}) | `{reason.smtp_code} {reason.enhanced}` "
            f"| {reason.action.value} |"
        )
    for family, codes in families.items():
        lines += ["", f"## `{family}`"]
        for code in codes:
            reason = REASONS[code]
            reply = reply_for(code).line()
            lines += [
                "",
                f"### `{code}`",
                "",
                f"`{reply}`",
                "",
                f"- **Meaning:** {_cell(reason.explain_en)}",
                f"- **Ý nghĩa:** {_cell(reason.explain_vi)}",
                f"- **Fix:** {_cell(reason.fix_en)}",
                f"- **Cách khắc phục:** {_cell(reason.fix_vi)}",
            ]
            if reason.directive:
                lines.append(f"- **Căn cứ / directive:** {_cell(reason.directive)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Write the page, or with ``--check`` say whether it is up to date."""
    text = render()
    if "--check" in argv:
        if PAGE.read_text("utf-8") != text:
            print(f"{PAGE} is out of date: run .venv/bin/python scripts/reference.py")
            return 1
        return 0
    PAGE.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
