//! Internet checksum (RFC 1071) pieces. Words are summed as loaded (native order): the one's
//! complement sum is byte-order independent, so the folded result is stored as is.

/// Sum of the two 16-bit halves of a 32-bit word.
#[inline(always)]
pub fn add32(sum: u32, word: u32) -> u32 {
    sum + (word & 0xffff) + (word >> 16)
}

/// Fold a running sum to 16 bits and complement it.
#[inline(always)]
pub fn finish(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Add a run of words read from the packet (indexed, so the loop unrolls into plain loads;
/// iterator chains over stack copies made loops the verifier rejected).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub fn add_words<const N: usize>(mut sum: u32, words: &[u32; N]) -> u32 {
    for i in 0..N {
        sum = add32(sum, words[i]);
    }
    sum
}
