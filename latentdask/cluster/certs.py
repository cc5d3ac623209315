"""``latentdask cluster certs DIR``: a private CA and the certificates for mutual TLS.

Dask's TLS is mutual: the scheduler accepts a worker or client only if it presents a
certificate signed by the CA the scheduler trusts, and they accept the scheduler likewise.
One CA per cluster, kept by whoever runs it; the client's key goes to the people allowed
to submit work (whoever holds it can run code on every worker).

Files written (keys readable by their owner only):

=====================  ===============================================
``ca.pem``             the CA certificate (give to every party)
``ca-key.pem``         the CA key (keep it; needed only to sign more)
``scheduler.pem/-key``  the scheduler's certificate and key
``worker.pem/-key``     the workers'
``client.pem/-key``     the clients'
=====================  ===============================================
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from latentdask.errors import LatentdaskError

if TYPE_CHECKING:
    from cryptography import x509

ROLES = ("scheduler", "worker", "client")


class CertificateError(LatentdaskError):
    """Certificates that cannot be written as asked."""


def _name(common: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "latentdask"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _alternative_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, *, private: bool) -> Path:
    """Write a new file; a private key is created readable by its owner only, whatever the umask.

    The mode is given when the file is created (no window in which another user could open a
    key written with wider permissions), and an existing file is replaced, not reused: a file
    opened earlier by someone else keeps the old inode and never sees the key.
    """
    path.unlink(missing_ok=True)  # make_certificates refused existing files unless told to overwrite
    try:  # O_EXCL: never follows a link, never opens a file someone else made in between
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    except FileExistsError:
        raise CertificateError(
            f"{path} was created by someone else while the certificates were written"
        ) from None
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    return path


def make_certificates(
    folder: str | Path,
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    days: int = 365,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write a CA and scheduler/worker/client certificates into ``folder``; return the paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    existing = [p.name for p in folder.glob("*.pem")]
    if existing and not overwrite:
        raise CertificateError(
            f"{folder} already holds {', '.join(sorted(existing))}; pass --overwrite to replace them"
        )
    if days < 1:
        raise CertificateError(f"--days {days}: certificates must be valid for at least a day")
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=days)

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("latentdask cluster CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca": _write(folder / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM), private=False),
        "ca-key": _write(folder / "ca-key.pem", pem_key(ca_key), private=True),
    }
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"latentdask {role}"))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_alternative_names(hosts), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        paths[role] = _write(
            folder / f"{role}.pem", cert.public_bytes(serialization.Encoding.PEM), private=False
        )
        paths[f"{role}-key"] = _write(folder / f"{role}-key.pem", pem_key(key), private=True)
    return paths
