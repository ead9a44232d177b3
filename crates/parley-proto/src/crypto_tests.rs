//! Known-answer tests of the wrapped primitives (Wycheproof, FIPS 203 / ACVP) and a differential test of ML-KEM.
