//! Maglev table sizes must be prime (every skip then walks all slots). Shared so the agent's
//! configuration checks and its table builder agree, and `const` so the default size is
//! checked when this crate compiles.

use crate::DEFAULT_TABLE_SIZE;

const _: () = assert!(is_prime(DEFAULT_TABLE_SIZE));

/// Whether `n` is prime (trial division by 6k ± 1: at most ~11k iterations for any `u32`).
pub const fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    // u64 so `d * d` cannot overflow near u32::MAX.
    let n = n as u64;
    let mut d: u64 = 5;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_prime_small_and_large() {
        let primes = (0..60).filter(|&n| is_prime(n));
        assert!(primes.eq([2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59]));
        assert!(is_prime(65537));
        assert!(is_prime(655373));
        assert!(!is_prime(65535));
        assert!(!is_prime(65536));
        assert!(!is_prime(65539 * 3));
        assert!(is_prime(4_294_967_291)); // largest u32 prime
        assert!(!is_prime(u32::MAX));
        assert!(!is_prime(65521 * 65519)); // product of two large primes
    }
}
