//! Tests of the `auth` module: helpers here, tests by topic below.
#![allow(clippy::unwrap_used)]

use axum::http::StatusCode;
use jsonwebtoken::errors::{Error as JwtError, ErrorKind as JwtErrorKind};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};

use super::grant::MAX_GLOB_BYTES;
use super::*;

mod claims;
mod grants;
mod keys;
mod providers;
mod requests;

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";

// Test-only key pairs, generated once with openssl 3:
//   openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048
//   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256
//   openssl genpkey -algorithm ED25519
//   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384
// and `openssl pkey -pubout` (`openssl rsa -RSAPublicKey_out` for the
// PKCS#1 form). They protect nothing.
const RSA_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDeQE11EATpyZ9s
BWABR0jazhmZWmW1zOc7jTsW5s3AwLcD9utB1vOnNLyUt1L6mSR2FwPzVhOx+6Or
Tvt4KWEFVN7aSML7/cFgzrLnh0YzqrjrRimmpttx/xxOBTwwAVXDiEJSZRKS9/bj
VefZcmqIf2tm94dFn7hPBOYiD5fV//TsKuyGN90lzNyvUjPu81q9C0VYx3Ta8qTE
NxP1URIaNaAB4LcPza/hnz4GFtq0YtMZ8ZtsZvbNTZAcakwfCab/ydlCKWkNFRXy
/K89xxI+mrIFNEjxmB99h+kQ5P6ldFDem9q7aGlP/gU49z5O9Sr/hPkZvEDHhaMi
WVqI/eJ1AgMBAAECggEAMWX8cVz2opn4T7OgI5ibBlsR0IaJnc9lw9Q/wnbZW5LZ
+s0afB9RN6Rel/VpQZ7hPkgeTisfJIuoVK6w8QPNdzhmcgEDKaw8m45FsHVeMqSr
BkwpfMuQcfWAboz2VDsvu06hYxvo9XaczumspyWprR4ZGqFA1UZLWnDdz8tEdcFM
qtrLagQD0Wrth9dxw5p1D2yKBuLc85Ct4TNX8OKiBML6FbqncTkyCA4h+Ic+DC43
rgv4mBlghBOe7QuOTCxLfMLXV4e40b4wstzQ7xqGOGoG49yVZO2Me3Hyk3bo+pyW
orS+yQPlFxeVE9xOklQSiHcoDNZ549PUehHqZN5VPwKBgQD4Bvk2YLowEVpxq4+o
DMV4dzsD3kaHGxi1zmqIUsEFFRVbT5C1IIX6Ipk8PLz9ezfE31y9gGQQ+L8i0hxC
bKUE0H11Qf7P8HdPqqsVR9tvSMCGb4ylE1rA+ELNOgNlvnh+UbVBqSdjRJPVLZGt
SoK1qtJti68gL4WY313ZP6rMqwKBgQDlZTeBow//AUKN+Xzwwr5D0EykAv1cCjc/
IPDO3w2WdHzGWWzIbI7bKrVx1tO1E1fSCkHwVH4er1J9IXz7eZloO0vKkW/KtTUV
druh418Ix5vzb4/68O5ogwfKav2+czFDK/8mVwUnaz7zhMlNqRMKJJMu25/+d6Z5
hyx1qiXNXwKBgDX7jpI/S0bbAAxtgr7YyMIHcVjOMBuH0kD/xEAXgttQU22kS6Kg
iYh/r0plDd09zE2VL+Iu55iqCy/Q+0WZz/DUT/oNeyBW/iDgzIu9MA1wkDayYLIt
HDuTzTZNwh+K7T7RGdpIrsH0Uxi66lIFPZ28qEAffuZKcZFsTEjUiqAxAoGBANUH
OxXDlW5OAD2SjEmVwFV/kjzZnemkfwu8DoU+tQKc6ObWUuSJk9zKe7fdNbu529tt
tTB3dqwOSr9zovpyQVl/f3H9v+ByiXqGSdccLLwdiqD2YLI8nlomHM0IsN31YbEs
oYU8WMfzm4FQNhVNxyWrM5fXU2xgNxQyyMH4oaRnAoGAJf3jlgjfTQJzuRMjWDDg
2XOe1ODIfvIoVTIvuoNfUxUp5vkNKgjqcw0oICQ0miuMXi9qIIZYe2f0udmvaN4L
os+AHXb/dV7LwPz5A1dquRQrkuy7jC7FCIiIuGnedGs06dHjIwidbkYQa2PZppgI
7biB8FFZLoVnMW2YBaf2hhc=
-----END PRIVATE KEY-----
";
const RSA_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA3kBNdRAE6cmfbAVgAUdI
2s4ZmVpltcznO407FubNwMC3A/brQdbzpzS8lLdS+pkkdhcD81YTsfujq077eClh
BVTe2kjC+/3BYM6y54dGM6q460Yppqbbcf8cTgU8MAFVw4hCUmUSkvf241Xn2XJq
iH9rZveHRZ+4TwTmIg+X1f/07CrshjfdJczcr1Iz7vNavQtFWMd02vKkxDcT9VES
GjWgAeC3D82v4Z8+BhbatGLTGfGbbGb2zU2QHGpMHwmm/8nZQilpDRUV8vyvPccS
PpqyBTRI8ZgffYfpEOT+pXRQ3pvau2hpT/4FOPc+TvUq/4T5GbxAx4WjIllaiP3i
dQIDAQAB
-----END PUBLIC KEY-----
";
const RSA_PUBLIC_PKCS1: &str = "\
-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEA3kBNdRAE6cmfbAVgAUdI2s4ZmVpltcznO407FubNwMC3A/brQdbz
pzS8lLdS+pkkdhcD81YTsfujq077eClhBVTe2kjC+/3BYM6y54dGM6q460Yppqbb
cf8cTgU8MAFVw4hCUmUSkvf241Xn2XJqiH9rZveHRZ+4TwTmIg+X1f/07Crshjfd
Jczcr1Iz7vNavQtFWMd02vKkxDcT9VESGjWgAeC3D82v4Z8+BhbatGLTGfGbbGb2
zU2QHGpMHwmm/8nZQilpDRUV8vyvPccSPpqyBTRI8ZgffYfpEOT+pXRQ3pvau2hp
T/4FOPc+TvUq/4T5GbxAx4WjIllaiP3idQIDAQAB
-----END RSA PUBLIC KEY-----
";
const EC_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgEGYfM45AbRbb4unz
KQ1GOHoczpVsVUgMlc22uXF08iKhRANCAASSZh6z/qoHIjlmot5rlWGkQWoAVcXj
imGUwOnlyMxvoQrq99mYPV2ws4H/Jv8zNdzOfA4Fg6w/2JGMWq1rCj1c
-----END PRIVATE KEY-----
";
const EC_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEkmYes/6qByI5ZqLea5VhpEFqAFXF
44phlMDp5cjMb6EK6vfZmD1dsLOB/yb/MzXcznwOBYOsP9iRjFqtawo9XA==
-----END PUBLIC KEY-----
";
const ED_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIExzztfA3URuECA6S4B3nLIYhDdodltDIi/6gI7Hq4J1
-----END PRIVATE KEY-----
";
const ED_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAWE7DPrlXPuyneLXCOAF6fchk01EpS6N99oz/1dYYg6c=
-----END PUBLIC KEY-----
";
const EC_P384_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE978SpTMKVjWtwQarzkSJ0RHRLhc3TUe9
WQQY5VHKN3JjGYjt06cwltCVQ2go5eyecIGQ/uTP1v2hpTbVR8kvKg5u6u+K0yKt
nwq9Zw8m8cciBiHtPjUJ5AjELV6VZrOS
-----END PUBLIC KEY-----
";

fn now() -> u64 {
    get_current_timestamp()
}

fn hs256_token(claims: &Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn claims_with(docs: Value) -> Value {
    json!({ "sub": "alice", "exp": now() + 3600, "docs": docs })
}

fn hs256() -> JwtVerifier {
    JwtVerifier::hs256(SECRET).unwrap()
}

fn sign(claims: &Value, algorithm: Algorithm, private_pem: &str) -> String {
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem.as_bytes()),
        other => panic!("no test key for {other:?}"),
    }
    .unwrap();
    encode(&Header::new(algorithm), claims, &key).unwrap()
}

fn assert_invalid(result: Result<Claims, AuthError>) -> JwtError {
    match result {
        Err(AuthError::InvalidToken(source)) => source,
        other => panic!("expected InvalidToken, got {other:?}"),
    }
}

fn parts(uri: &str, authorization: Option<&str>) -> Parts {
    let mut request = axum::http::Request::builder().uri(uri);
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    request.body(()).unwrap().into_parts().0
}
