//! Method: deliveries are POSTs.

use crate::rejection::Rejection;
use http::Method;

pub fn check(method: &Method) -> Result<(), Rejection> {
    if method == Method::POST {
        Ok(())
    } else {
        Err(Rejection::MethodNotAllowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_post() {
        assert_eq!(check(&Method::POST), Ok(()));
        for m in [Method::GET, Method::PUT, Method::HEAD, Method::OPTIONS] {
            assert_eq!(check(&m), Err(Rejection::MethodNotAllowed));
        }
    }
}
