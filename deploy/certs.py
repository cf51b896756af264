"""Certificates and node keys for a deployment: a private CA, the SuperLink's TLS certificate
(names: localhost, 127.0.0.1, ::1 and every `--host`), and one EC key pair per SuperNode in the
OpenSSH format Flower's node authentication reads (`flwr supernode register` takes the `.pub`,
the device keeps the key).

TLS and node authentication are on unless `--insecure` is given: a federation's updates are its
users' data in disguise, and an unauthenticated SuperLink accepts any node that can reach it.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flowerbed.tasks.errors import ConfigError


@dataclass(frozen=True)
class Certificates:
    """The files `certs` writes into one folder."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def superlink_cert(self) -> Path:
        return self.folder / "superlink.crt"

    @property
    def superlink_key(self) -> Path:
        return self.folder / "superlink.key"

    def node_key(self, k: int) -> Path:
        return self.folder / f"node-{k}.key"

    def node_pub(self, k: int) -> Path:
        return self.folder / f"node-{k}.pub"

    def num_nodes(self) -> int:
        return len(list(self.folder.glob("node-*.pub")))


def make_certificates(out: Path, nodes: int, hosts: Sequence[str] = (), days: int = 365, force: bool = False) -> Certificates:
    """Write a CA, a SuperLink certificate signed by it, and `nodes` SuperNode key pairs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    certs = Certificates(Path(out).expanduser().resolve())
    if nodes < 1:
        raise ConfigError.invalid("--nodes", nodes, "at least 1")
    if days < 1:  # a certificate that expires before the devices connect (or cryptography's traceback below 0)
        raise ConfigError.invalid("--days", days, "at least 1")
    if certs.ca_key.exists() and not force:
        raise ConfigError(f"{certs.folder} already holds a CA (ca.key): keep it, or pass --force to replace every key in it")
    certs.folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowerbed CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    link_key = ec.generate_private_key(ec.SECP384R1())
    link_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (list(hosts) or ["localhost"])[0])]))
        .issuer_name(ca_name).public_key(link_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(subject_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    _write(certs.ca_key, ca_key.private_bytes(pem, pkcs8, serialization.NoEncryption()), secret=True)
    _write(certs.ca_cert, ca_cert.public_bytes(pem))
    _write(certs.superlink_key, link_key.private_bytes(pem, pkcs8, serialization.NoEncryption()), secret=True)
    _write(certs.superlink_cert, link_cert.public_bytes(pem))
    for old in list(certs.folder.glob("node-*.key")) + list(certs.folder.glob("node-*.pub")):
        old.unlink()  # --force: keys of nodes beyond the new count must not look valid
    for k in range(nodes):
        write_node_key(certs.node_key(k), certs.node_pub(k))
    return certs


def write_node_key(key_path: Path, pub_path: Path) -> None:
    """One SuperNode's P-384 key pair, both in OpenSSH format (what Flower loads on each side)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    _write(key_path, private, secret=True)
    _write(pub_path, key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")


def subject_names(hosts: Sequence[str]) -> list:
    """The SuperLink certificate's names: loopback always, then each host (IP address or DNS name)."""
    from cryptography import x509

    names: list = [x509.DNSName("localhost"), *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1"))]
    for host in hosts:
        try:
            entry = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in names:
            names.append(entry)
    return names


def certificate_names(path: Path) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in names.get_values_for_type(x509.DNSName) + names.get_values_for_type(x509.IPAddress)]


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    path.write_bytes(data)
    path.chmod(0o600 if secret else 0o644)


