"""Getting into instances: ``vastkit ssh``, ``exec``, ``copy`` and ``start``.

``ssh`` and ``copy`` take an instance id or a run id (resolved through the ledger to the run's
live instance); the address is the one ``vastai ssh-url`` prints (direct port 22 when the host
maps it, else Vast's SSH proxy).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from typing import TYPE_CHECKING

from vastkit.errors import BadRequestError, VastkitError

from ._context import Context
from ._instances import no_such_instance, parse_instance_id, unknown_instance
from ._output import ExitCode, UsageError
from ._parser import Commands

if TYPE_CHECKING:
    from vastkit.api.ssh import SshAddress

__all__ = ["register_copy", "register_exec", "register_ssh", "register_start"]

_REMOTE = re.compile(r"(?P<target>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<path>.*)")
"""``TARGET:/path`` in ``vastkit copy``: an instance id or a run id, then a path on it."""


def register_ssh(commands: Commands) -> None:
    """Add ``vastkit ssh``."""
    p = commands.add(
        "ssh",
        "open a shell on an instance (or print the ssh command)",
        "Open an SSH session on an instance, given its id or a run id (the run's live "
        "instance). Your public key must be attached to the instance (vastkit attaches "
        "~/.ssh/id_ed25519.pub or id_rsa.pub when it rents). Anything after -- runs as the "
        "remote command.",
        handler=_cmd_ssh,
    )
    p.add_argument("target", metavar="RUN|ID", help="a run id or an instance id")
    p.add_argument("remote", nargs="*", metavar="CMD", help="a command to run instead of a shell")
    p.set_defaults(trailing=[])
    p.add_argument("--print", action="store_true", help="print the command, do not run it")
    p.add_argument("-i", "--identity", metavar="FILE", help="the private key file (ssh -i)")


def register_exec(commands: Commands) -> None:
    """Add ``vastkit exec``."""
    p = commands.add(
        "exec",
        "run ls, rm or du in an instance's /workspace through Vast (no SSH needed)",
        "Run a command through Vast's execute endpoint and print its output. Vast allows only "
        "ls, rm and du, at most 512 characters, in /workspace of a running instance.",
        handler=_cmd_exec,
    )
    p.add_argument("id", metavar="ID", help="the instance id")
    p.add_argument("cmd", nargs="*", metavar="CMD", help="the command, after --")
    p.set_defaults(trailing=[])
    p.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the output (default 30)",
    )


def register_copy(commands: Commands) -> None:
    """Add ``vastkit copy``."""
    p = commands.add(
        "copy",
        "copy files to or from an instance over SSH (rsync, else scp)",
        "Copy SRC to DST; one of them is TARGET:PATH, where TARGET is an instance id or a run "
        "id. Uses rsync when it is installed (else scp) through the instance's SSH address.",
        handler=_cmd_copy,
    )
    p.add_argument("src", metavar="SRC", help="a local path or TARGET:PATH")
    p.add_argument("dst", metavar="DST", help="a local path or TARGET:PATH")
    p.add_argument("--print", action="store_true", help="print the command, do not run it")
    p.add_argument("--tool", choices=("rsync", "scp"), help="the copy program (default: rsync)")
    p.add_argument("-i", "--identity", metavar="FILE", help="the private key file")


def register_start(commands: Commands) -> None:
    """Add ``vastkit start``."""
    p = commands.add(
        "start",
        "start a stopped instance (it waits for its GPUs when they are taken)",
        handler=_cmd_start,
    )
    p.add_argument("id", metavar="ID", help="the instance id")


# ---------------------------------------------------------------------------- resolving


def _resolve(ctx: Context, target: str) -> int:
    """The instance id ``target`` names: a run's live instance, else an instance id.

    Raises:
        UsageError: Neither a run in the ledger nor a number.
        VastkitError: The run has no live instance (exit 1).
    """
    ledger = ctx.existing_ledger()
    run = ledger.get_run(target) if ledger is not None else None
    if run is not None and ledger is not None:
        live = [
            a
            for a in ledger.attempts(run.run_id)
            if a.instance_id is not None and a.ended_at is None
        ]
        if not live:
            raise VastkitError(f"run {target} has no live instance (see `vastkit runs`)")
        instance_id = live[-1].instance_id
        assert instance_id is not None
        return instance_id
    if not target.isdigit():
        raise UsageError(f"{target!r} is neither a run in the ledger nor an instance id")
    return parse_instance_id(target)


def _address(ctx: Context, instance_id: int) -> SshAddress:
    """The SSH address of a live instance.

    Raises:
        NoSuchId: No such instance (exit 9).
        VastkitError: It has no SSH address yet (exit 1).
    """
    from vastkit.api.ssh import ssh_address

    info = ctx.client.get_instance(instance_id)
    if info is None:
        raise no_such_instance(instance_id)
    address = ssh_address(info)
    if address is None:
        raise VastkitError(
            f"instance {instance_id} has no SSH address yet ({info.state.value}); "
            "it gets one when it runs"
        )
    return address


def _run(ctx: Context, argv: list[str], *, print_only: bool) -> int:
    if print_only:
        ctx.out.line(shlex.join(argv))
        return ExitCode.OK
    if shutil.which(argv[0]) is None:
        raise UsageError(f"{argv[0]} is not installed (not on PATH); use --print for the command")
    return subprocess.run(argv, check=False).returncode


# ---------------------------------------------------------------------------- commands


def _cmd_ssh(ctx: Context) -> int:
    instance_id = _resolve(ctx, ctx.args.target)
    address = _address(ctx, instance_id)
    remote = [*ctx.args.remote, *ctx.args.trailing]
    argv = address.command(*remote, identity=ctx.args.identity)
    if ctx.out.json_mode:
        ctx.out.json(
            {
                "id": instance_id,
                "host": address.host,
                "port": address.port,
                "user": address.user,
                "direct": address.direct,
                "url": address.url,
                "command": argv,
            }
        )
        return ExitCode.OK
    return _run(ctx, argv, print_only=ctx.args.print)


def _cmd_exec(ctx: Context) -> int:
    instance_id = parse_instance_id(ctx.args.id)
    words = [*ctx.args.cmd, *ctx.args.trailing]
    if not words:
        raise UsageError("give the command after --, e.g. `vastkit exec 12345 -- ls /workspace`")
    command = shlex.join(words)
    try:
        with unknown_instance(instance_id):
            text = ctx.client.execute(instance_id, command, timeout=ctx.args.wait)
    except BadRequestError:  # Vast answers an unknown id here with 400 invalid_container_id
        if ctx.client.get_instance(instance_id) is None:
            raise no_such_instance(instance_id) from None
        raise
    if ctx.out.json_mode:
        ctx.out.json({"id": instance_id, "command": command, "output": text})
    else:
        ctx.out.write(text if text.endswith("\n") or not text else text + "\n")
    return ExitCode.OK


def _split(ctx: Context, spec: str) -> tuple[int, str] | None:
    """``(instance id, path)`` when ``spec`` is ``TARGET:PATH``; None for a local path."""
    match = _REMOTE.fullmatch(spec)
    if match is None:
        return None
    target = match["target"]
    ledger = ctx.existing_ledger()
    if not target.isdigit() and (ledger is None or ledger.get_run(target) is None):
        return None
    return _resolve(ctx, target), match["path"] or "."


def copy_command(
    address: SshAddress,
    src: str,
    dst: str,
    *,
    upload: bool,
    tool: str,
    identity: str | None = None,
) -> list[str]:
    """The rsync or scp command that copies ``src`` to ``dst``, the remote side (``dst`` when
    ``upload``, else ``src``) being a path on the instance at ``address``."""
    remote = f"{address.target}:"
    src_arg = src if upload else remote + src
    dst_arg = remote + dst if upload else dst
    key = ["-i", identity] if identity else []
    if tool == "scp":
        return ["scp", "-r", "-P", str(address.port), *key, src_arg, dst_arg]
    shell = shlex.join(["ssh", "-p", str(address.port), *key])
    return ["rsync", "-az", "--partial", "-e", shell, src_arg, dst_arg]


def _cmd_copy(ctx: Context) -> int:
    src, dst = _split(ctx, ctx.args.src), _split(ctx, ctx.args.dst)
    if (src is None) == (dst is None):
        raise UsageError(
            "give exactly one remote side, as ID:PATH or RUN:PATH (e.g. "
            "`vastkit copy ./data 12345:/workspace/data`)"
        )
    upload = dst is not None
    instance_id, path = dst if dst is not None else src  # type: ignore[misc]
    address = _address(ctx, instance_id)
    tool = ctx.args.tool or ("rsync" if shutil.which("rsync") else "scp")
    local = ctx.args.src if upload else ctx.args.dst
    argv = copy_command(
        address,
        local if upload else path,
        path if upload else local,
        upload=upload,
        tool=tool,
        identity=ctx.args.identity,
    )
    return _run(ctx, argv, print_only=ctx.args.print)


def _cmd_start(ctx: Context) -> int:
    instance_id = parse_instance_id(ctx.args.id)
    with unknown_instance(instance_id):
        ctx.client.start_instance(instance_id)
    if ctx.out.json_mode:
        ctx.out.json({"id": instance_id, "started": True})
    else:
        ctx.out.line(
            f"starting instance {instance_id} (it waits for its GPUs if another renter holds "
            "them; see `vastkit ps`)"
        )
    return ExitCode.OK
