"""The build manifest: the documented example parses, every field's violation names the
field and what was expected, and a manifest round-trips through its JSON form."""

from __future__ import annotations

import json

import pytest

from builds.errors import ManifestError
from builds.manifest import Manifest, Needs, manifest_from_dict, parse_manifest
from contracts.requirements import Requirements
from tests.build_archives import MANIFEST, manifest_bytes

ARCADE = Manifest(
    name="arcade",
    version="1.0.0",
    entry=("python3", "game.py"),
    width=1280,
    height=720,
    fps=60,
    requires=Needs(gpu=False, vram_mib=0, cpu_cores=1, ram_mib=256),
    inputs=("keyboard", "mouse", "gamepad"),
    price_ceiling_per_minute=0.05,
)


def refusal(data: bytes) -> tuple[str, str]:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data)
    return caught.value.field, str(caught.value)


def test_the_documented_example_parses_to_its_record() -> None:
    assert parse_manifest(manifest_bytes()) == ARCADE


def test_a_manifest_round_trips_through_its_json_form() -> None:
    assert ARCADE.to_dict() == MANIFEST
    gpu_game = manifest_from_dict(
        MANIFEST
        | {"requires": {"gpu": True, "vram_mib": 8192, "cpu_cores": 8, "ram_mib": 16384}}
        | {"price_ceiling_per_minute": None, "version": "2.0.0-rc.1+build5"}
    )
    assert manifest_from_dict(json.loads(json.dumps(gpu_game.to_dict()))) == gpu_game


def test_the_price_ceiling_is_optional() -> None:
    without = {key: value for key, value in MANIFEST.items() if key != "price_ceiling_per_minute"}
    assert manifest_from_dict(without).price_ceiling_per_minute is None
    assert (
        manifest_from_dict(MANIFEST | {"price_ceiling_per_minute": 0}).price_ceiling_per_minute
        == 0.0
    )


def test_requirements_are_what_the_indexer_filters_on() -> None:
    needs = {"gpu": True, "vram_mib": 4096, "cpu_cores": 4, "ram_mib": 8192}
    manifest = manifest_from_dict(MANIFEST | {"requires": needs})
    assert manifest.requirements() == Requirements(vram_mib=4096, cpu_cores=4, ram_mib=8192)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"schema": 2}, "schema", "expected 1, got 2"),
        ({"schema": True}, "schema", "expected 1, got True"),
        ({"name": "Arcade"}, "name",
         "expected 1 to 32 of a-z, 0-9 and '-', not starting '-', got 'Arcade'"),
        ({"name": "-arcade"}, "name",
         "expected 1 to 32 of a-z, 0-9 and '-', not starting '-', got '-arcade'"),
        ({"name": "a" * 33}, "name",
         f"expected 1 to 32 of a-z, 0-9 and '-', not starting '-', got '{'a' * 33}'"),
        ({"name": "reference"}, "name",
         "'reference' is the network's built-in game; choose another"),
        ({"version": ""}, "version", "expected 1 to 32 of 0-9, A-Z, a-z, '.+-', got ''"),
        ({"version": "1.0 beta"}, "version",
         "expected 1 to 32 of 0-9, A-Z, a-z, '.+-', got '1.0 beta'"),
        ({"entry": []}, "entry",
         "expected a list of 1 to 32 non-empty strings (the command's argv), got []"),
        ({"entry": "python3 game.py"}, "entry",
         "expected a list of 1 to 32 non-empty strings (the command's argv),"
         " got 'python3 game.py'"),
        ({"entry": ["python3", 3]}, "entry[1]",
         "expected a string of 1 to 4096 characters without NUL, got 3"),
        ({"entry": ["python3", ""]}, "entry[1]",
         "expected a string of 1 to 4096 characters without NUL, got ''"),
        ({"resolution": [1280]}, "resolution", "expected [width, height], got [1280]"),
        ({"resolution": [1281, 720]}, "resolution[0]", "expected an even number, got 1281"),
        ({"resolution": [1280, 721]}, "resolution[1]", "expected an even number, got 721"),
        ({"resolution": [4096, 720]}, "resolution[0]",
         "expected a whole number from 320 to 3840, got 4096"),
        ({"resolution": [1280, 100]}, "resolution[1]",
         "expected a whole number from 180 to 2160, got 100"),
        ({"fps": 0}, "fps", "expected a whole number from 1 to 240, got 0"),
        ({"fps": 60.0}, "fps", "expected a whole number from 1 to 240, got 60.0"),
        ({"fps": True}, "fps", "expected a whole number from 1 to 240, got True"),
        ({"requires": []}, "requires", "expected an object, got a list"),
        ({"requires": {"gpu": False, "vram_mib": 0, "cpu_cores": 1}}, "requires.ram_mib",
         "is missing"),
        ({"requires": {"gpu": "no", "vram_mib": 0, "cpu_cores": 1, "ram_mib": 1}},
         "requires.gpu", "expected true or false, got 'no'"),
        ({"requires": {"gpu": True, "vram_mib": 0, "cpu_cores": 1, "ram_mib": 1}},
         "requires.vram_mib", "expected at least 1 when requires.gpu is true"),
        ({"requires": {"gpu": False, "vram_mib": 512, "cpu_cores": 1, "ram_mib": 1}},
         "requires.vram_mib", "expected 0 when requires.gpu is false: 512"),
        ({"requires": {"gpu": False, "vram_mib": 0, "cpu_cores": 0, "ram_mib": 1}},
         "requires.cpu_cores", "expected a whole number from 1 to 1024, got 0"),
        ({"requires": {"gpu": False, "vram_mib": 0, "cpu_cores": 1, "ram_mib": -1}},
         "requires.ram_mib", "expected a whole number from 0 to 4194304, got -1"),
        ({"requires": {"gpu": False, "vram_mib": 0, "cpu_cores": 1, "ram_mib": 1, "disk": 9}},
         "requires.disk",
         "unknown key(s) requires.disk; the schema has gpu, vram_mib, cpu_cores, ram_mib"),
        ({"inputs": []}, "inputs",
         "expected a non-empty list of distinct values among keyboard, mouse, gamepad, got []"),
        ({"inputs": ["touch"]}, "inputs[0]",
         "expected one of keyboard, mouse, gamepad, got 'touch'"),
        ({"inputs": ["mouse", "mouse"]}, "inputs[1]", "'mouse' is listed twice"),
        ({"price_ceiling_per_minute": -0.01}, "price_ceiling_per_minute",
         "expected a finite number >= 0 or null, got -0.01"),
        ({"price_ceiling_per_minute": "0.05"}, "price_ceiling_per_minute",
         "expected a finite number >= 0 or null, got '0.05'"),
        ({"price_ceiling_per_minute": 10**400}, "price_ceiling_per_minute",
         "expected a finite number >= 0 or null, got 1000000000000000000000000000000000000000"
         "00000000000000000..."),
        ({"colour": "red", "genre": "puzzle"}, "colour",
         "unknown key(s) colour, genre; the schema has schema, name, version, entry,"
         " resolution, fps, requires, inputs, price_ceiling_per_minute"),
    ],
)  # fmt: skip
def test_each_violation_names_its_field_and_what_was_expected(
    changes: dict[str, object], field: str, message: str
) -> None:
    assert refusal(manifest_bytes(**changes)) == (field, f"manifest.json: {field}: {message}")


@pytest.mark.parametrize("key", ["schema", "name", "version", "entry", "resolution", "fps",
                                 "requires", "inputs"])  # fmt: skip
def test_every_key_but_the_price_ceiling_is_required(key: str) -> None:
    data = json.dumps({name: value for name, value in MANIFEST.items() if name != key})
    assert refusal(data.encode()) == (key, f"manifest.json: {key}: is missing")


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (b"[1, 2]", "", "manifest.json must hold a JSON object, not a list"),
        (b"\xff\xfe{}", "", "manifest.json is not UTF-8 text"),
        (b'{"schema": NaN}', "", "manifest.json is not valid JSON: NaN is not a JSON number"),
        (b'{"name": "a", "name": "b"}', "name", "manifest.json: name: is given twice"),
        (b"{", "", "manifest.json is not valid JSON: Expecting property name enclosed in"
                   " double quotes: line 1 column 2 (char 1)"),
        (b" " * 65537, "", "manifest.json is 65537 bytes; at most 65536"),
    ],
)  # fmt: skip
def test_ambiguous_or_unreadable_json_is_refused(data: bytes, field: str, message: str) -> None:
    assert refusal(data) == (field, message)


ALLOWED = (
    "a program inside the build (a relative path such as 'bin/game') or an interpreter the"
    " container provides (python3, python) followed by a script inside the build"
)
INSIDE = (
    ": a relative path inside the build, without '..', '.' or empty parts, not starting"
    " with '/' or '-', got "
)


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        (["/bin/sh", "-c", "cat ~/.ssh/id_rsa"], "entry[0]",
         f"'/bin/sh' is a shell or a launcher, which an entry never starts; expected {ALLOWED}"),
        (["sh", "-c", "true"], "entry[0]",
         f"'sh' is a shell or a launcher, which an entry never starts; expected {ALLOWED}"),
        (["bash", "run.sh"], "entry[0]",
         f"'bash' is a shell or a launcher, which an entry never starts; expected {ALLOWED}"),
        (["env", "python3", "game.py"], "entry[0]",
         f"'env' is a shell or a launcher, which an entry never starts; expected {ALLOWED}"),
        (["tools/dash"], "entry[0]",
         f"'tools/dash' is a shell or a launcher, which an entry never starts; expected {ALLOWED}"),
        (["/usr/games/arcade"], "entry[0]",
         f"'/usr/games/arcade' is a path outside the build; expected {ALLOWED}"),
        (["../other-build/game"], "entry[0]", f"expected {ALLOWED}{INSIDE}'../other-build/game'"),
        (["bin/../../game"], "entry[0]", f"expected {ALLOWED}{INSIDE}'bin/../../game'"),
        (["bin//game"], "entry[0]", f"expected {ALLOWED}{INSIDE}'bin//game'"),
        (["bin\\game.exe"], "entry[0]", f"expected {ALLOWED}{INSIDE}'bin\\\\game.exe'"),
        (["-game"], "entry[0]", f"expected {ALLOWED}{INSIDE}'-game'"),
        (["python3"], "entry", "python3 needs a script inside the build after it"),
        (["python3", "-c", "import os"], "entry[1]",
         f"expected the script python3 runs{INSIDE}'-c'"),
        (["python3", "-m", "http.server"], "entry[1]",
         f"expected the script python3 runs{INSIDE}'-m'"),
        (["python3", "/tmp/x.py"], "entry[1]",
         f"expected the script python3 runs{INSIDE}'/tmp/x.py'"),
        (["python", "../x.py"], "entry[1]", f"expected the script python runs{INSIDE}'../x.py'"),
    ],
)  # fmt: skip
def test_an_entry_runs_the_builds_own_file_never_a_shell_or_a_path_outside(
    entry: list[str], field: str, message: str
) -> None:
    assert refusal(manifest_bytes(entry=entry)) == (field, f"manifest.json: {field}: {message}")


def test_a_program_entry_is_kept_as_a_path_in_the_build_folder() -> None:
    game = manifest_from_dict(MANIFEST | {"entry": ["bin/game", "--fast"]})
    assert game.entry == ("./bin/game", "--fast")  # exec never looks "./..." up on PATH
    assert game.entry_file == ("entry[0]", "bin/game")
    assert game.command("/b/abc", "/opt/py") == ["/b/abc/bin/game", "--fast"]
    assert manifest_from_dict(game.to_dict()) == game  # the kept form parses to itself
    assert ARCADE.entry_file == ("entry[1]", "game.py")
    assert ARCADE.command("/b/abc/", "/opt/py") == ["/opt/py", "/b/abc/game.py"]
