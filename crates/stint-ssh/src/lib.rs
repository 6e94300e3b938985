//! OpenSSH user certificates and key revocation lists for stint.
