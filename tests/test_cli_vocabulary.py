"""One CLI vocabulary: a flag that means the same thing is spelled the same in every verb, old spellings still
parse but are not shown, and convert and batch declare their shared output options once."""
import argparse
import re

import pytest

from rvm.commands.cli import build_parser
from rvm.commands.options import HIDDEN_ALIASES, add_output_options

# dests that name one meaning twice: neither spelling of a pair may be a dest of its own beside the other
SYNONYMS = [("ratio", "downsample_ratio"), ("resolutions", "resolution")]
CANONICAL = {"downsample_ratio": ["--downsample-ratio"], "resolution": ["--resolution"]}


def verbs():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices


VERBS = verbs()


def shown(action) -> bool:
    return action.help is not argparse.SUPPRESS


def spellings():
    """dest -> verb -> the option strings --help shows for it."""
    found = {}
    for verb, parser in VERBS.items():
        for action in parser._actions:
            if action.option_strings and shown(action) and action.dest != "help":
                found.setdefault(action.dest, {})[verb] = sorted(action.option_strings)
    return found


def test_a_dest_is_spelled_the_same_in_every_verb():
    mismatched = {dest: by_verb for dest, by_verb in spellings().items()
                  if len({tuple(strings) for strings in by_verb.values()}) > 1}
    assert not mismatched, mismatched
    for dest, strings in CANONICAL.items():
        assert {tuple(s) for s in spellings()[dest].values()} == {tuple(strings)}, dest
    # the two meanings the issue named are in every verb that measures or converts
    assert set(spellings()["downsample_ratio"]) >= {"convert", "batch", "export", "parity", "bench", "profile",
                                                    "sensitivity"}
    assert set(spellings()["resolution"]) >= {"export", "bench", "profile"}


def test_a_long_option_means_one_thing():
    """(`-o` is each verb's output: a folder of outputs, or `rvm web`'s page folder itself.)"""
    owners = {}
    for dest, by_verb in spellings().items():
        for strings in by_verb.values():
            for string in strings:
                if string.startswith("--"):
                    owners.setdefault(string, set()).add(dest)
    assert {s: d for s, d in owners.items() if len(d) > 1} == {}


@pytest.mark.parametrize("pair", SYNONYMS, ids=["/".join(p) for p in SYNONYMS])
def test_no_two_dests_share_a_meaning(pair):
    dests = set(spellings())
    assert len(dests & set(pair)) <= 1, pair
    old, new = pair
    assert old not in dests  # the old one lives on only as a hidden alias of the new


def test_every_hidden_alias_is_known_and_parses_into_its_canonical_dest():
    for verb, parser in VERBS.items():
        for action in parser._actions:
            if action.option_strings and not shown(action) and action.dest not in ("verbose",):
                canonical = [c for c, aliases in HIDDEN_ALIASES.items() if set(action.option_strings) <= set(aliases)]
                assert canonical, (verb, action.option_strings)
                assert any(canonical[0] in a.option_strings and a.dest == action.dest for a in parser._actions)


@pytest.mark.parametrize("argv, dest, value", [
    (["bench", "--ratio", "0.5", "--resolutions", "160x96,192x108"], "downsample_ratio", "0.5"),
    (["bench", "--ratio", "0.5", "--resolutions", "160x96,192x108"], "resolution", "160x96,192x108"),
    (["bench", "--resolution", "1280x720,1920x1080"], "resolution", "1280x720,1920x1080"),
    (["profile", "--ratio", "0.5", "--resolutions", "320x192"], "downsample_ratio", 0.5),
    (["profile", "--ratio", "0.5", "--resolutions", "320x192"], "resolution", "320x192"),
    (["profile", "--downsample-ratio", "0.5"], "downsample_ratio", 0.5),
    (["export", "--format", "onnx", "--resolution", "320x192", "--ratio", "0.5"], "resolution", (320, 192)),
    (["export", "--format", "onnx", "--resolution", "320x192", "--ratio", "0.5"], "downsample_ratio", 0.5),
    (["convert", "--input-source", "x.mp4", "--ratio", "auto"], "downsample_ratio", "auto"),
    (["batch", "x.mp4", "-o", "out", "--downsample-ratio", "0.25"], "downsample_ratio", 0.25),
])
def test_old_and_new_spellings_parse(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


def test_defaults_are_the_canonical_options_defaults():
    args = build_parser().parse_args(["bench"])
    assert (args.resolution, args.downsample_ratio) == ("1920x1080", "0.25")
    args = build_parser().parse_args(["profile"])
    assert (args.resolution, args.downsample_ratio) == ("1920x1080", 0.25)
    assert build_parser().parse_args(["convert", "--input-source", "x.mp4"]).downsample_ratio == "auto"


@pytest.mark.parametrize("verb", list(VERBS))
def test_old_spellings_are_absent_from_help(verb):
    text = VERBS[verb].format_help()
    for aliases in HIDDEN_ALIASES.values():
        for alias in aliases:
            assert not re.search(re.escape(alias) + r"(?![\w-])", text), (verb, alias)


def test_convert_and_batch_share_their_output_options():
    reference = argparse.ArgumentParser()
    add_output_options(reference)
    declared = {a.dest: a for a in reference._actions if a.option_strings and shown(a) and a.dest != "help"}
    assert {"output_type", "background", "downsample_ratio", "input_resize", "output_video_mbps", "seq_chunk",
            "overwrite"} <= set(declared)
    for verb in ("convert", "batch"):
        actions = {a.dest: a for a in VERBS[verb]._actions if a.option_strings and shown(a)}
        for dest, expected in declared.items():
            action = actions[dest]
            same = ("option_strings", "type", "nargs", "choices", "default", "metavar")
            assert [getattr(action, k) for k in same] == [getattr(expected, k) for k in same], (verb, dest)
