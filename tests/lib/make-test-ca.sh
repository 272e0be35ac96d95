#!/usr/bin/env bash
# Makes a throw-away certificate authority and a server certificate for the
# loopback address, for the TLS tests (wss://, Kafka's SSL listener,
# PostgreSQL with ssl=on):
#
#   make-test-ca.sh DIR [NAME]
#
# writes into DIR: ca.pem and ca.key (the test CA), NAME.pem and NAME.key
# (NAME defaults to `server`; valid for localhost and 127.0.0.1, signed by
# the CA), and other-ca.pem (a second CA that signs nothing here: a "wrong
# CA" for the tests that must fail). Keys are unencrypted PKCS#8, valid one
# day. Needs the openssl command.
set -euo pipefail

dir=$1
name=${2:-server}
mkdir -p "$dir"
cd "$dir"

if [ ! -f ca.pem ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=Weft test CA" \
    -keyout ca.key -out ca.pem -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=Weft other test CA" \
    -keyout other-ca.key -out other-ca.pem -addext "basicConstraints=critical,CA:TRUE" 2>/dev/null
fi

openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$name.key" -out "$name.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$name.ext"
openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
  -extfile "$name.ext" -out "$name.pem" 2>/dev/null
rm -f "$name.csr" "$name.ext"
chmod 600 ./*.key
