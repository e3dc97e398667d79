"""`--ca`, `--cert`, `--key` and `--username` beside every `--broker` option, and the password prompt.

The broker's identity travels through every layer as one URL (app.transport.urls: mqtts://user@host:8883
?ca=&cert=&key=), which is exact but long to type; these options build that URL from the parts an IT
department hands out (`tinymlops broker kit`). The password is never an option: it comes from
$TINYMLOPS_BROKER_PASSWORD, the OS keyring, or (on a terminal) a prompt whose answer lives in this
process only (app.transport.credentials.remember_for_session).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import replace

from app.domain.errors import LinkError

# (option, BrokerUrl field, metavar, help)
IDENTITY_OPTIONS = (
    ("--ca", "ca", "FILE", "with --broker mqtts://...: the CA certificate that signed the broker's (PEM)"),
    ("--cert", "cert", "FILE", "with --broker mqtts://...: this client's certificate (PEM; {device} is "
     "replaced by each device id for `sim`)"),
    ("--key", "key", "FILE", "with --cert: its private key (PEM)"),
    ("--username", "username", "NAME", "with --broker: the user to log in as; the password comes from "
     "$TINYMLOPS_BROKER_PASSWORD, the OS keyring or a prompt, never from the command line"),
)
DEST_PREFIX = "broker_identity_"


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from _parsers(child)


def add_identity_options(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command that takes --broker the identity options too."""
    for p in _parsers(parser):
        if any("--broker" in a.option_strings for a in p._actions):
            group = p.add_argument_group("broker identity (TLS and login)")
            for option, field, metavar, text in IDENTITY_OPTIONS:
                group.add_argument(option, dest=DEST_PREFIX + field, metavar=metavar, help=text)


def fold_identity(args: argparse.Namespace, *, prompt: bool | None = None) -> None:
    """Write the identity options into `args.broker`; ask for the password on a terminal when a user
    is given and no other source has one. LinkError for options without --broker or a bad mix."""
    from app.transport.credentials import password_for, remember_for_session
    from app.transport.urls import parse_broker_url

    given = {field: value for _o, field, _m, _h in IDENTITY_OPTIONS
             if (value := getattr(args, DEST_PREFIX + field, None))}
    if not given:
        return
    if not getattr(args, "broker", None):
        names = ", ".join(o for o, field, _m, _h in IDENTITY_OPTIONS if field in given)
        raise LinkError(f"{names} need --broker URL (e.g. --broker mqtts://broker.plant:8883)")
    url = parse_broker_url(args.broker)
    url = parse_broker_url(str(replace(url, **given)))  # the URL's own rules: files need mqtts://, cert+key
    args.broker = str(url)
    asks = sys.stdin.isatty() if prompt is None else prompt
    if url.username and password_for(url) is None and asks:
        password = getpass.getpass(f"broker password for {url.username}@{url.address}: ")
        if password:
            remember_for_session(url, password)
