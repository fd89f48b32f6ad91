#!/usr/bin/env python3
"""Starts moto's server (S3, KMS, ...) for gitca's tests, with two additions.

1. A correction (what is patched and why): moto 5.2.5 ignores KMS Sign's MessageType. For
   MessageType=DIGEST it hashes the given digest again, so the signature does not verify over the
   real message. AWS KMS signs a DIGEST as given. This launcher replaces moto's KmsResponse.sign
   for DIGEST requests only: the digest is signed as prehashed (cryptography's Prehashed), with
   the padding/hash of the requested SigningAlgorithm, and its length is checked like KMS does.
   RAW requests go to moto's own implementation unchanged.

2. Optional throttling, to test gitca's backoff: with --kms-sign-rate N, Sign calls beyond N per
   second (a token bucket with a burst of N) are answered with ThrottlingException, as KMS does
   above its request quota.

3. A key whose description starts with "throttle-get-public-key:N" answers its first N
   GetPublicKey calls with ThrottlingException (AWS counts GetPublicKey in the key's request
   quota), for the test of gitca's retry when it opens the key. Other keys are untouched.

Usage: python tests/moto_launcher.py -H 127.0.0.1 -p 5000 [--kms-sign-rate 50]
"""
import argparse
import json
import sys
import threading
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from moto.core.exceptions import JsonRESTError
from moto.kms import responses as kms_responses

_moto_sign = kms_responses.KmsResponse.sign

_HASHES = {
    "ECDSA_SHA_256": hashes.SHA256(),
    "ECDSA_SHA_384": hashes.SHA384(),
    "ECDSA_SHA_512": hashes.SHA512(),
    "RSASSA_PKCS1_V1_5_SHA_256": hashes.SHA256(),
    "RSASSA_PKCS1_V1_5_SHA_384": hashes.SHA384(),
    "RSASSA_PKCS1_V1_5_SHA_512": hashes.SHA512(),
    "RSASSA_PSS_SHA_256": hashes.SHA256(),
    "RSASSA_PSS_SHA_384": hashes.SHA384(),
    "RSASSA_PSS_SHA_512": hashes.SHA512(),
}


class Throttling(JsonRESTError):
    code = 400

    def __init__(self):
        super().__init__("ThrottlingException", "Rate exceeded")


class TokenBucket:
    def __init__(self, rate):
        self.rate = float(rate)
        self.tokens = float(rate)
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self):
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


BUCKET = None


def sign(self):
    if BUCKET is not None and not BUCKET.take():
        raise Throttling()
    if self._get_param("MessageType") != "DIGEST":
        return _moto_sign(self)
    key_id = self._get_param("KeyId")
    digest = self._get_param("Message")  # moto base64-decodes blob parameters
    algorithm = self._get_param("SigningAlgorithm")
    self._validate_key_id(key_id)
    key = self.kms_backend.describe_key(key_id)
    if algorithm not in key.signing_algorithms:
        return _moto_sign(self)  # let moto produce its validation error
    h = _HASHES[algorithm]
    if len(digest) != h.digest_size:
        raise JsonRESTError(
            "ValidationException",
            f"Digest is invalid length for algorithm {algorithm}.",
        )
    private = key.private_key.private_key  # moto wrapper -> cryptography key
    if isinstance(private, ec.EllipticCurvePrivateKey):
        signature = private.sign(digest, ec.ECDSA(utils.Prehashed(h)))
    elif isinstance(private, rsa.RSAPrivateKey):
        pad = (
            padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
            if algorithm.startswith("RSASSA_PSS")
            else padding.PKCS1v15()
        )
        signature = private.sign(digest, pad, utils.Prehashed(h))
    else:
        raise JsonRESTError("UnsupportedOperationException", "key type")
    import base64

    return json.dumps(
        {
            "KeyId": key.arn,
            "Signature": base64.b64encode(signature).decode(),
            "SigningAlgorithm": algorithm,
        }
    )


kms_responses.KmsResponse.sign = sign

_moto_get_public_key = kms_responses.KmsResponse.get_public_key
_THROTTLED = {}
_THROTTLED_LOCK = threading.Lock()


def get_public_key(self):
    key_id = self._get_param("KeyId")
    try:
        description = self.kms_backend.describe_key(key_id).description or ""
    except Exception:
        description = ""
    if description.startswith("throttle-get-public-key:"):
        allowed = int(description.split(":", 1)[1])
        with _THROTTLED_LOCK:
            seen = _THROTTLED.get(key_id, 0)
            _THROTTLED[key_id] = seen + 1
        if seen < allowed:
            raise Throttling()
    return _moto_get_public_key(self)


kms_responses.KmsResponse.get_public_key = get_public_key


def main():
    global BUCKET
    p = argparse.ArgumentParser()
    p.add_argument("-H", "--host", default="127.0.0.1")
    p.add_argument("-p", "--port", default="5000")
    p.add_argument("--kms-sign-rate", type=float, default=None)
    a = p.parse_args()
    if a.kms_sign_rate:
        BUCKET = TokenBucket(a.kms_sign_rate)
    from moto.server import main as moto_main

    moto_main(["-H", a.host, "-p", str(a.port)])


if __name__ == "__main__":
    sys.exit(main())
