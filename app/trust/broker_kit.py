"""A plant broker kit: what an IT department needs to run Mosquitto for the product.

`write_kit` makes, with `cryptography` only:
* a CA (ECDSA P-256) that signs everything below; its private key stays in the kit folder, mode
  0600, for issuing more devices later (`tinymlops broker kit --add`);
* a server certificate for the broker (its host names and 127.0.0.1 as subject alternative names);
* one client certificate per device (CN = device id) and per operator (CN = operator name);
* `mosquitto.conf`: a TLS listener that requires a client certificate and takes its CN as the user
  name (`require_certificate true`, `use_identity_as_username true`), no anonymous access;
* `acl`: deny by default; a device may publish only its own status, telemetry, stream and reply
  topics and read only its own cmd topic and its site's model chunks; only operator identities may
  publish commands and chunks (Mosquitto `pattern` lines with `%u`);
* when operator passwords are given, `passwd`: a Mosquitto password file made by Mosquitto's own
  `mosquitto_passwd` (salted PBKDF2-SHA512; each password goes in through its standard input, never
  its command line), and a second TLS listener (`password_port`) where an operator logs in with
  user name and password instead of a client certificate (a workstation that cannot hold one); the
  same ACL applies to the same user name.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.domain.errors import TinyMLOpsError
from app.protocol.topics import valid_id

# Certificates outlive a maintenance cycle but not a security review: renew yearly-ish.
CERT_VALID_DAYS = 825
CA_VALID_DAYS = 3650
# Private keys in the kit are for the broker host's and each device's eyes only.
KEY_FILE_MODE = 0o600
DEFAULT_TLS_PORT = 8883
# The operators' user name + password listener (TLS, server certificate only): next to DEFAULT_TLS_PORT.
DEFAULT_PASSWORD_PORT = 8884
MOSQUITTO_PASSWD = "mosquitto_passwd"
# mosquitto_passwd hashes one password in milliseconds; a loaded machine still answers in this.
PASSWD_TIMEOUT_S = 30.0


@dataclass
class KitSpec:
    site: str
    devices: list[str]
    operators: list[str] = field(default_factory=lambda: ["operator"])
    hosts: list[str] = field(default_factory=lambda: ["localhost"])
    port: int = DEFAULT_TLS_PORT
    valid_days: int = CERT_VALID_DAYS
    password_port: int = DEFAULT_PASSWORD_PORT


class KitError(TinyMLOpsError):
    """A broker kit cannot be made as asked (bad names, an existing kit in the way)."""


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(path, KEY_FILE_MODE)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tiny-MLOps")])


def _issue(subject_cn: str, key, ca_cert: x509.Certificate | None, ca_key, days: int, *,
           ca: bool = False, server_names: list[str] | None = None,
           not_before: dt.datetime | None = None) -> x509.Certificate:
    now = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # clock skew between hosts
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject_cn))
               .issuer_name(ca_cert.subject if ca_cert else _name(subject_cn))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now)
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    elif server_names is not None:
        alt: list[x509.GeneralName] = []
        for host in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        builder = (builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(ca_key if ca_key is not None else key, hashes.SHA256())


def acl_text(site: str) -> str:
    """Mosquitto ACL for one site: deny by default, a device confined to its own topics."""
    base = f"tinymlops/v1/{site}"
    return "\n".join([
        "# Tiny-MLOps ACL (generated by `tinymlops broker kit`). Deny by default: a client may use only",
        "# the topics below. %u is the client certificate's CN (use_identity_as_username).",
        "",
        "# every device: its own topics, and its site's model chunks (pull rollouts)",
        f"pattern write {base}/%u/status",
        f"pattern write {base}/%u/telemetry",
        f"pattern write {base}/%u/stream",
        f"pattern write {base}/%u/reply",
        f"pattern read {base}/%u/cmd",
        f"pattern read {base}/models/#",
        "",
    ])


def operator_acl(operators: list[str], site: str) -> str:
    base = f"tinymlops/v1/{site}"
    lines = ["# operators: read every device (the fleet view subscribes across sites), publish the site's",
             "# commands and model chunks"]
    for op in operators:
        lines += [f"user {op}", "topic read tinymlops/v1/#", f"topic write {base}/+/cmd",
                  f"topic readwrite {base}/models/#", ""]
    return "\n".join(lines)


def _server_tls(kit: Path) -> list[str]:
    return [f"cafile {kit / 'ca.crt'}", f"certfile {kit / 'broker' / 'broker.crt'}",
            f"keyfile {kit / 'broker' / 'broker.key'}"]


def mosquitto_conf(kit: Path, port: int, bind: str = "", run_as: str = "", password_port: int | None = None) -> str:
    """The broker's config. Started as root, Mosquitto drops to `run_as` (default: the `mosquitto`
    user) before it reads the ACL and the keys: give that user the kit folder, or name another.
    With `password_port`, a second TLS listener takes user name + password (the kit's `passwd`);
    the certificate listener never consults that file (use_identity_as_username)."""
    passwords = []
    if password_port is not None:
        passwords = ["", "# operators with a user name and password (passwd), TLS with the broker's certificate only",
                     f"listener {password_port} {bind}".rstrip(), *_server_tls(kit), "tls_version tlsv1.2"]
    return "\n".join([
        "# Mosquitto for Tiny-MLOps (generated by `tinymlops broker kit`): TLS with client certificates,",
        "# the certificate's CN is the identity the ACL checks. Start: mosquitto -c mosquitto.conf",
        *([f"user {run_as}"] if run_as else []),
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {kit / 'acl'}",
        *([f"password_file {kit / 'passwd'}"] if password_port is not None else []),
        "persistence true",
        f"persistence_location {kit / 'data'}/",
        f"listener {port} {bind}".rstrip(),
        *_server_tls(kit),
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.2",
        *passwords,
        "",
    ])


def _check_passwords(passwords: dict[str, str], operators: list[str]) -> None:
    for name, password in passwords.items():
        if name not in operators:
            raise KitError(f"a password for {name!r}, who is not one of the kit's operators ({', '.join(operators)})")
        if not password or any(c in password for c in "\r\n\0"):
            raise KitError(f"the password for {name!r} is empty or holds a line break or NUL: Mosquitto cannot take it")


def _passwd_tool() -> str:
    tool = shutil.which(MOSQUITTO_PASSWD)
    if tool is None:
        raise KitError(f"{MOSQUITTO_PASSWD} is missing: install the Debian package 'mosquitto'")
    return tool


def write_password_file(path: Path, passwords: dict[str, str]) -> None:
    """A Mosquitto password file for these user names, made by Mosquitto's own `mosquitto_passwd`
    (salted PBKDF2-SHA512). Each password goes in through its standard input, never its command
    line (which `ps` shows to every user). The file is made private (0600)."""
    tool = _passwd_tool()
    path = Path(path)
    path.unlink(missing_ok=True)
    for i, (name, password) in enumerate(passwords.items()):
        args = [tool, *(["-c"] if i == 0 else []), str(path), name]
        try:
            proc = subprocess.run(args, input=f"{password}\n{password}\n", text=True, capture_output=True,
                                  timeout=PASSWD_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise KitError(f"{MOSQUITTO_PASSWD} did not finish within {PASSWD_TIMEOUT_S:.0f} s") from exc
        finally:
            if path.exists():
                os.chmod(path, KEY_FILE_MODE)
        if proc.returncode != 0:
            why = (proc.stderr or proc.stdout).strip().splitlines()
            detail = why[-1] if why else f"exit status {proc.returncode}"
            raise KitError(f"{MOSQUITTO_PASSWD} refused the password for {name!r}: {detail}")


def write_kit(spec: KitSpec, out: Path, *, bind: str = "",
              operator_passwords: dict[str, str] | None = None) -> dict[str, Path]:
    """Write the kit into `out` (created; must not hold a kit already). Returns the main paths.
    `operator_passwords` (operator -> password, from the environment or the OS keyring: never a
    command line) adds the password file and the password listener."""
    out = Path(out).resolve()
    if operator_passwords:  # checked before anything is written: a refusal leaves no half kit
        _check_passwords(operator_passwords, spec.operators)
        _passwd_tool()
    if not valid_id(spec.site):
        raise KitError(f"bad site name {spec.site!r}: use letters, digits, '_', '.', '-'")
    for name in [*spec.devices, *spec.operators]:
        if not valid_id(name):
            raise KitError(f"bad identity {name!r}: use letters, digits, '_', '.', '-' (it becomes a topic level)")
    clash = set(spec.devices) & set(spec.operators)
    if clash:
        raise KitError(f"{', '.join(sorted(clash))} named both as device and operator")
    if (out / "ca.crt").exists():
        raise KitError(f"{out} already holds a broker kit; choose another folder")
    for sub in ("broker", "devices", "operators", "data"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    ca_key = _key()
    ca_cert = _issue(f"Tiny-MLOps CA {spec.site}", ca_key, None, None, CA_VALID_DAYS, ca=True)
    _write_key(out / "ca.key", ca_key)
    _write_cert(out / "ca.crt", ca_cert)
    broker_key = _key()
    names = list(dict.fromkeys([*spec.hosts, "127.0.0.1"]))
    _write_key(out / "broker" / "broker.key", broker_key)
    _write_cert(out / "broker" / "broker.crt",
                _issue(spec.hosts[0] if spec.hosts else "localhost", broker_key, ca_cert, ca_key, spec.valid_days,
                       server_names=names))
    for folder, names_ in (("devices", spec.devices), ("operators", spec.operators)):
        for name in names_:
            issue_client(out, folder, name, ca_cert, ca_key, spec.valid_days)
    (out / "acl").write_text(acl_text(spec.site) + "\n" + operator_acl(spec.operators, spec.site))
    paths = {"dir": out, "ca": out / "ca.crt", "acl": out / "acl"}
    if operator_passwords:
        write_password_file(out / "passwd", operator_passwords)
        paths["passwd"] = out / "passwd"
    conf = out / "mosquitto.conf"
    password_port = spec.password_port if operator_passwords else None
    conf.write_text(mosquitto_conf(out, spec.port, bind, password_port=password_port))
    return {**paths, "conf": conf}


def issue_client(out: Path, folder: str, name: str, ca_cert: x509.Certificate, ca_key, days: int,
                 not_before: dt.datetime | None = None) -> tuple[Path, Path]:
    """A client certificate and key for `name` under `out/folder/` (also used to add one later)."""
    key = _key()
    crt_path, key_path = out / folder / f"{name}.crt", out / folder / f"{name}.key"
    _write_key(key_path, key)
    _write_cert(crt_path, _issue(name, key, ca_cert, ca_key, days, not_before=not_before))
    return crt_path, key_path


def load_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((Path(out) / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((Path(out) / "ca.key").read_bytes(), password=None)
    return cert, key


def client_url(kit: Path, host: str, port: int, folder: str, name: str) -> str:
    """The mqtts:// URL a client of this kit connects with (`{device}` works for `name`)."""
    kit = Path(kit).resolve()
    return (f"mqtts://{host}:{port}?ca={kit / 'ca.crt'}&cert={kit / folder / (name + '.crt')}"
            f"&key={kit / folder / (name + '.key')}")


def password_url(kit: Path, host: str, port: int, name: str) -> str:
    """The mqtts:// URL an operator logs in with by password (it comes from $TINYMLOPS_BROKER_PASSWORD
    or the OS keyring, never the URL)."""
    return f"mqtts://{name}@{host}:{port}?ca={Path(kit).resolve() / 'ca.crt'}"


def certificate_name(path: str | Path) -> str | None:
    """The common name of a PEM certificate (the MQTT identity under use_identity_as_username)."""
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None
