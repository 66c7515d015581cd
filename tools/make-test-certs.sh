#!/bin/sh
# Makes the throwaway certificates the TLS tests use, with the openssl
# command, into DIR (nothing secret is committed; every key is new):
#   ca.pem              the test CA (ca.key signs everything below)
#   server.pem/.key     for localhost, 127.0.0.1 and ::1
#   client.pem/.key     a client certificate, subject
#                       CN=resilnet-test-client,O=resilnet
#   wrong-ca.pem        a CA that signed none of them
#   expired.pem/.key    for localhost, signed by ca.pem, expired in 2020
# Usage: make-test-certs.sh DIR. Does nothing when DIR/done exists. Safe to
# run from several tests at once: each builds in a directory of its own and
# the first to finish renames it into place.
set -eu

dir=${1:?usage: make-test-certs.sh DIR}
[ -f "$dir/done" ] && exit 0
mkdir -p "$(dirname "$dir")"
tmp=$(mktemp -d "$dir.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
          -out "$1" 2>/dev/null; }

# CAs: self-signed, allowed to sign certificates.
for ca in ca wrong-ca; do
  key $ca.key
  openssl req -x509 -new -key $ca.key -days 3650 -subj "/CN=resilnet $ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out $ca.pem
done

cat > server.ext <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
cat > client.ext <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
EXT

sign() { # name subject extfile
  key $1.key
  openssl req -new -key $1.key -subj "$2" -out $1.csr
  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days 825 -extfile "$3" -out $1.pem 2>/dev/null
}
sign server "/CN=localhost" server.ext
sign client "/O=resilnet/CN=resilnet-test-client" client.ext

# Expired: `openssl x509` cannot back-date in OpenSSL 3.0, `openssl ca`
# can, given a minimal database of its own.
key expired.key
openssl req -new -key expired.key -subj "/CN=localhost" -out expired.csr
mkdir ca.db
: > ca.db/index.txt
cat > ca.cnf <<'CNF'
[ca]
default_ca = test
[test]
database = ca.db/index.txt
new_certs_dir = ca.db
serial = ca.db/serial
default_md = sha256
policy = any
copy_extensions = none
[any]
commonName = supplied
CNF
echo 1000 > ca.db/serial
openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key \
  -startdate 20200101000000Z -enddate 20200201000000Z \
  -extfile server.ext -in expired.csr -out expired.pem 2>/dev/null

rm -rf ./*.csr ./*.ext ca.cnf ca.db ./*.srl
touch done
chmod 700 "$tmp"
# The first to finish wins; the others' copies are dropped by the trap.
mv -T "$tmp" "$dir" 2>/dev/null || true
[ -f "$dir/done" ]
