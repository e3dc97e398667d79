"""Trust: operator signing keys, signed model images, broker kits (Qt-free).

Cryptography comes from the `cryptography` package only; nothing here implements a primitive.
"""
