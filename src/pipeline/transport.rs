//! Transport: an `https_only` route refuses plain HTTP (403, never a redirect: a redirected POST
//! loses its body and senders count 3xx as failure).

use super::address::Client;
use crate::rejection::Rejection;

pub fn check(https_only: bool, client: &Client) -> Result<(), Rejection> {
    if https_only && !client.https {
        Err(Rejection::HttpsRequired)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_only_refuses_plain() {
        let plain = Client {
            addr: None,
            https: false,
            peer_trusted: false,
        };
        let tls = Client {
            https: true,
            ..plain.clone()
        };
        assert_eq!(check(true, &plain), Err(Rejection::HttpsRequired));
        assert_eq!(check(true, &tls), Ok(()));
        assert_eq!(check(false, &plain), Ok(()));
    }
}
