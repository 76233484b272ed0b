/*
 * The independent crypto floor of the load benchmark (gateway/benches/http.rs): one P-256
 * ECDSA verify with OpenSSL (SHA-256 of a DPoP-sized signing input, then the verify, as an
 * ES256 check) plus one recoverable secp256k1 signature with libsecp256k1 (SHA3-256 of an
 * EIP-191-sized message standing in for Keccak-256, which costs the same), in a loop on one
 * thread. Prints operations per second: the median of 7 batches of 400.
 *
 * Built by the benchmark when a C compiler, OpenSSL's and libsecp256k1's headers are present
 * (scripts/bench-deps.sh installs them):
 *   cc -O2 -o floor floor.c -lcrypto -lsecp256k1
 */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCHES 7
#define PER_BATCH 400

static void die(const char *what) {
    fprintf(stderr, "floor: %s failed\n", what);
    exit(1);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    /* A P-256 key, and one signature over a signing input the size of a DPoP proof's. */
    EVP_PKEY *p256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!p256) die("P-256 keygen");
    unsigned char input[300];
    memset(input, 'a', sizeof input);
    unsigned char digest[32];
    unsigned int digest_len = 0;
    if (!EVP_Digest(input, sizeof input, digest, &digest_len, EVP_sha256(), NULL)) die("sha256");
    EVP_PKEY_CTX *signer = EVP_PKEY_CTX_new(p256, NULL);
    if (!signer || EVP_PKEY_sign_init(signer) <= 0) die("sign init");
    unsigned char sig[80];
    size_t sig_len = sizeof sig;
    if (EVP_PKEY_sign(signer, sig, &sig_len, digest, sizeof digest) <= 0) die("sign");
    EVP_PKEY_CTX *verifier = EVP_PKEY_CTX_new(p256, NULL);
    if (!verifier || EVP_PKEY_verify_init(verifier) <= 0) die("verify init");

    /* A secp256k1 wallet key. */
    secp256k1_context *ctx = secp256k1_context_create(SECP256K1_CONTEXT_SIGN);
    unsigned char seckey[32];
    do {
        if (RAND_bytes(seckey, sizeof seckey) != 1) die("random");
    } while (!secp256k1_ec_seckey_verify(ctx, seckey));
    unsigned char message[60] = "\x19" "Ethereum Signed Message:\n32";
    unsigned char hash[32];

    double rates[BATCHES];
    unsigned long counter = 0;
    for (int b = 0; b < BATCHES; b++) {
        double start = now_s();
        for (int i = 0; i < PER_BATCH; i++) {
            /* The verify: hash the signing input, check the signature. */
            if (!EVP_Digest(input, sizeof input, digest, &digest_len, EVP_sha256(), NULL))
                die("sha256");
            if (EVP_PKEY_verify(verifier, sig, sig_len, digest, sizeof digest) != 1)
                die("verify");
            /* The signature: a fresh message each time. */
            counter++;
            memcpy(message + 28, &counter, sizeof counter);
            if (!EVP_Digest(message, sizeof message, hash, &digest_len, EVP_sha3_256(), NULL))
                die("sha3");
            secp256k1_ecdsa_recoverable_signature rsig;
            if (!secp256k1_ecdsa_sign_recoverable(ctx, &rsig, hash, seckey, NULL, NULL))
                die("secp256k1 sign");
            unsigned char compact[64];
            int recid = 0;
            secp256k1_ecdsa_recoverable_signature_serialize_compact(ctx, compact, &recid, &rsig);
        }
        rates[b] = PER_BATCH / (now_s() - start);
    }
    qsort(rates, BATCHES, sizeof rates[0], cmp);
    printf("%.1f\n", rates[BATCHES / 2]);
    secp256k1_context_destroy(ctx);
    EVP_PKEY_CTX_free(verifier);
    EVP_PKEY_CTX_free(signer);
    EVP_PKEY_free(p256);
    return 0;
}
