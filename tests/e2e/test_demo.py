"""`make demo` prints what README says it prints: the simulate command on examples/fleet.yaml."""

from __future__ import annotations

from pathlib import Path

from torchproof_sim.simulate import simulate

ROOT = Path(__file__).resolve().parents[2]


def readme_table() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("`make demo` prints the converged fleet")
    block = text[text.index("```\n", start) + 4:]
    return block[:block.index("```\n")].splitlines()


async def test_the_demo_prints_the_table_readme_shows() -> None:
    report = await simulate(fleet=ROOT / "examples" / "fleet.yaml", profiles=[ROOT / "profiles" / "pytorch-20.06.yaml"],
                            timeout=60)
    assert report.converged
    printed = report.table().splitlines()
    shown = readme_table()
    assert len(printed) >= len(shown)
    for line, expected in zip(printed, shown, strict=False):
        if expected.endswith(" ..."):  # README shortens the scheduler's long message
            assert line.startswith(expected.removesuffix(" ...")), (line, expected)
        else:
            assert line == expected
    assert printed[len(shown)] == ""  # then the API request count, which README leaves out
