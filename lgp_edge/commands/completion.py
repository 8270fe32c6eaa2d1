"""``lgp-edge completion bash|zsh|fish``: a shell completion script generated from the argparse tree.

The script is static: it knows every subcommand, option and choice of this lgp-edge, the built-in target
and profile names (for TARGET and PROFILE values) and completes directories for POOL and DIR values, files
(and directories) for FILE and PATH values. Regenerate it after upgrading lgp-edge.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from lgp_edge.errors import UsageError

SHELLS = ("bash", "zsh", "fish")
PROG = "lgp-edge"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash, zsh or fish)",
                       description="Print a completion script for SHELL on stdout. bash: add "
                                   "'eval \"$(lgp-edge completion bash)\"' to ~/.bashrc; zsh: add "
                                   "'eval \"$(lgp-edge completion zsh)\"' to ~/.zshrc (after compinit); fish: "
                                   "'lgp-edge completion fish > ~/.config/fish/completions/lgp-edge.fish'.")
    p.add_argument("shell", metavar="SHELL", choices=SHELLS, help="bash, zsh or fish")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lgp_edge.cli import build_parser

    print(completion_script(build_parser(), args.shell), end="")
    return 0


# ------------------------------------------------------------------------------------------------ the tree
@dataclass(frozen=True)
class Opt:
    flags: tuple[str, ...]  # e.g. ("-v", "--verbose")
    help: str
    value: tuple[str, ...] | None  # None: a flag; else how to complete its value (see _value_spec)


@dataclass
class Node:
    path: str  # subcommand names from the top, space-separated ("" for lgp-edge itself)
    subs: dict[str, str] = field(default_factory=dict)  # subcommand -> help
    opts: list[Opt] = field(default_factory=list)
    positional: tuple[str, ...] | None = None  # how to complete a positional argument, None: there is none


def _clean(text: str | None) -> str:
    return " ".join((text or "").replace("%%", "%").split())


def _value_spec(action: argparse.Action) -> tuple[str, ...]:
    """How to complete a value: ("w", word, ...) from a list, ("d",) a directory, ("f",) a file, ("n",) nothing."""
    if action.choices:
        return ("w", *map(str, action.choices))
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    if metavar in ("TARGET", "PROFILE"):
        from lgp_edge.profiles import known_profiles
        from lgp_edge.targets import known_targets

        return ("w", *(known_targets() if metavar == "TARGET" else known_profiles()))
    if metavar == "DATA":
        return ("w", "fashion-mnist", "synthetic", "imagefolder:")
    # PATH: a file or a folder (files lists both); DIR,DIR,...: the first folder of the list
    return {"DIR": ("d",), "POOL": ("d",), "DIR,DIR,...": ("d",), "FILE": ("f",), "PATH": ("f",)}.get(metavar, ("n",))


def walk(parser: argparse.ArgumentParser, path: str = "") -> list[Node]:
    """Every parser of the tree, top first."""
    node, children = Node(path), []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: _clean(a.help) for a in action._choices_actions}
            for name, child in action.choices.items():
                node.subs[name] = helps.get(name, "")
                children += walk(child, f"{path} {name}".strip())
        elif action.option_strings:
            node.opts.append(Opt(tuple(action.option_strings), _clean(action.help),
                                 None if action.nargs == 0 else _value_spec(action)))
        else:
            node.positional = _value_spec(action)
    return [node, *children]


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    makers: dict[str, Callable[[list[Node]], str]] = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}
    if shell not in makers:
        raise UsageError(f"no completion for shell '{shell}'; choose one of {', '.join(SHELLS)}")
    return makers[shell](walk(parser))


def _sq(text: str) -> str:
    """Single-quoted for bash and zsh."""
    return "'" + text.replace("'", "'\\''") + "'"


def _arms(cases: dict[str, list[str]]) -> list[str]:
    """case arms grouping the patterns whose body is the same: ["'a'|'b') body ;;", ...]."""
    return [f"        {'|'.join(_sq(p) for p in pats)}) {body} ;;" for body, pats in cases.items()]


def _value_cases(nodes: list[Node], body: Callable[[tuple[str, ...]], str]) -> dict[str, list[str]]:
    cases: dict[str, list[str]] = defaultdict(list)
    for n in nodes:
        for o in n.opts:
            if o.value is not None:
                for flag in o.flags:
                    cases[body(o.value)].append(f"{n.path}|{flag}")
    return cases


# ------------------------------------------------------------------------------------------------ bash
def _bash_spec(spec: tuple[str, ...]) -> str:
    return "echo " + _sq(" ".join(spec))


def bash_script(nodes: list[Node]) -> str:
    subs = [f"        {_sq(n.path)}) echo {_sq(' '.join(n.subs))} ;;" for n in nodes if n.subs]
    opts = [f"        {_sq(n.path)}) echo {_sq(' '.join(f for o in n.opts for f in o.flags))} ;;" for n in nodes]
    pos = [f"        {_sq(n.path)}) {_bash_spec(n.positional)} ;;" for n in nodes if n.positional]
    values = _arms(_value_cases(nodes, _bash_spec))
    return "\n".join([
        f"# bash completion for {PROG}, generated by '{PROG} completion bash'",
        "_lgp_edge_subs() {", '    case "$1" in', *subs, "    esac", "}",
        "_lgp_edge_opts() {", '    case "$1" in', *opts, "    esac", "}",
        "_lgp_edge_positional() {", '    case "$1" in', *pos, "        *) return 1 ;;", "    esac", "}",
        "# how to complete the value of option $2 of subcommand $1; fails when $2 takes no value",
        "_lgp_edge_value() {", '    case "$1|$2" in', *values, "        *) return 1 ;;", "    esac", "}",
        _BASH_MAIN.strip("\n"), ""])


_BASH_MAIN = r"""
_lgp_edge_reply() {
    case "$1" in
        w\ *) COMPREPLY=($(compgen -W "${1#w }" -- "$cur")) ;;
        d) compopt -o filenames 2>/dev/null; local IFS=$'\n'; COMPREPLY=($(compgen -d -- "$cur")) ;;
        f) compopt -o filenames 2>/dev/null; local IFS=$'\n'; COMPREPLY=($(compgen -f -- "$cur")) ;;
        *) COMPREPLY=() ;;
    esac
}
_lgp_edge() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local cmdpath="" w i spec skip=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        if ((skip)); then [[ "$w" == "=" ]] || skip=0; continue; fi  # --opt=value: bash splits at "="
        if [[ "$w" == -* ]]; then
            _lgp_edge_value "$cmdpath" "$w" >/dev/null && skip=1
            continue
        fi
        if [[ " $(_lgp_edge_subs "$cmdpath") " == *" $w "* ]]; then
            cmdpath="${cmdpath:+$cmdpath }$w"
        fi
    done
    if [[ "$prev" == "=" ]] && ((COMP_CWORD > 2)); then prev="${COMP_WORDS[COMP_CWORD-2]}"; fi
    if ((COMP_CWORD > 1)) && spec="$(_lgp_edge_value "$cmdpath" "$prev")"; then
        _lgp_edge_reply "$spec"
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$(_lgp_edge_opts "$cmdpath")" -- "$cur"))
        return 0
    fi
    local subs
    subs="$(_lgp_edge_subs "$cmdpath")"
    if [[ -n "$subs" ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
    elif spec="$(_lgp_edge_positional "$cmdpath")"; then
        _lgp_edge_reply "$spec"
    fi
    return 0
}
complete -F _lgp_edge lgp-edge
"""


# ------------------------------------------------------------------------------------------------ zsh
def _zsh_spec(spec: tuple[str, ...]) -> str:
    words = " ".join(_sq(w) for w in spec[1:])
    return f"REPLY={spec[0]}; reply=({words})"


def _described(pairs: list[tuple[str, str]]) -> str:
    return " ".join(_sq(f"{name}:{desc}" if desc else name) for name, desc in pairs)


def zsh_script(nodes: list[Node]) -> str:
    subs = [f"        {_sq(n.path)}) reply=({_described(list(n.subs.items()))}) ;;" for n in nodes if n.subs]
    opts = [f"        {_sq(n.path)}) reply=({_described([(f, o.help) for o in n.opts for f in o.flags])}) ;;"
            for n in nodes]
    pos = [f"        {_sq(n.path)}) {_zsh_spec(n.positional)} ;;" for n in nodes if n.positional]
    values = _arms(_value_cases(nodes, _zsh_spec))
    return "\n".join([
        f"#compdef {PROG}",
        f"# zsh completion for {PROG}, generated by '{PROG} completion zsh'",
        "_lgp_edge_subs() {", '    reply=()', '    case "$1" in', *subs, "    esac", "}",
        "_lgp_edge_opts() {", '    reply=()', '    case "$1" in', *opts, "    esac", "}",
        "_lgp_edge_positional() {", '    case "$1" in', *pos, "        *) return 1 ;;", "    esac", "}",
        "# how to complete the value of option $2 of subcommand $1 (REPLY: w words, d directory, f file)",
        "_lgp_edge_value() {", '    case "$1|$2" in', *values, "        *) return 1 ;;", "    esac", "}",
        _ZSH_MAIN.strip("\n"), ""])


_ZSH_MAIN = r"""
_lgp_edge_kind() {
    case "$REPLY" in
        w) compadd -a reply ;;
        d) _files -/ ;;
        f) _files ;;
    esac
}
_lgp_edge() {
    local cmdpath="" w REPLY i skip=0
    local -a reply names
    for ((i = 2; i < CURRENT; i++)); do
        w="${words[i]}"
        if ((skip)); then skip=0; continue; fi
        if [[ "$w" == -* ]]; then
            _lgp_edge_value "$cmdpath" "$w" && skip=1
            continue
        fi
        _lgp_edge_subs "$cmdpath"
        names=(${reply%%:*})
        if ((${names[(Ie)$w]})); then
            cmdpath="${cmdpath:+$cmdpath }$w"
        fi
    done
    if ((CURRENT > 2)) && _lgp_edge_value "$cmdpath" "${words[CURRENT-1]}"; then
        _lgp_edge_kind
        return
    fi
    if [[ "$PREFIX" == -* ]]; then
        _lgp_edge_opts "$cmdpath"
        _describe -t options option reply
        return
    fi
    _lgp_edge_subs "$cmdpath"
    if ((${#reply})); then
        _describe -t commands command reply
    elif _lgp_edge_positional "$cmdpath"; then
        _lgp_edge_kind
    fi
}
if [[ "${funcstack[1]}" == _lgp_edge ]]; then
    _lgp_edge "$@"
else
    compdef _lgp_edge lgp-edge
fi
"""


# ------------------------------------------------------------------------------------------------ fish
def _fq(text: str) -> str:
    """Single-quoted for fish."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_spec(spec: tuple[str, ...]) -> str:
    if spec[0] == "w":
        return f"-x -a {_fq(' '.join(spec[1:]))}"
    return {"d": "-x -a '(__fish_complete_directories)'", "f": "-r -F"}.get(spec[0], "-x")


def _fish_opt(o: Opt) -> str:
    flags = " ".join(f"-l {f[2:]}" if f.startswith("--") else f"-s {f[1:]}" for f in o.flags)
    value = "" if o.value is None else " " + _fish_spec(o.value)
    return f"{flags}{value} -d {_fq(o.help)}" if o.help else f"{flags}{value}"


def fish_script(nodes: list[Node]) -> str:
    subs = [line for n in nodes if n.subs
            for line in (f"        case {_fq(n.path)}", f"            printf '%s\\n' {' '.join(n.subs)}")]
    lines = [f"# fish completion for {PROG}, generated by '{PROG} completion fish'",
             "function __lgp_edge_subs", '    switch "$argv[1]"', *subs, "    end", "end",
             _FISH_MAIN.strip("\n"), f"complete -c {PROG} -f"]
    for n in nodes:
        at = f"-n {_fq('__lgp_edge_at ' + n.path if n.path else '__lgp_edge_at')}"
        lines += [f"complete -c {PROG} {at} -a {_fq(name)} -d {_fq(desc)}" for name, desc in n.subs.items()]
        lines += [f"complete -c {PROG} {at} {_fish_opt(o)}" for o in n.opts]
        if n.positional and n.positional[0] != "n":
            lines.append(f"complete -c {PROG} {at} {_fish_spec(n.positional).replace('-x ', '').replace('-r ', '')}")
    return "\n".join(lines) + "\n"


_FISH_MAIN = r"""
function __lgp_edge_cmdpath
    set -l cmdpath
    for w in (commandline -opc)[2..-1]
        if contains -- $w (__lgp_edge_subs "$cmdpath")
            set -a cmdpath $w
        end
    end
    echo "$cmdpath"
end
function __lgp_edge_at
    set -l p (__lgp_edge_cmdpath)
    test "$p" = "$argv"
end
"""
