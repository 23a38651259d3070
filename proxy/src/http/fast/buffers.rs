//! Read buffers of client connections idle between requests, kept per thread for the next
//! request that arrives anywhere on it: an idle keep-alive connection holds no buffer (as
//! nginx's hold none), and a busy one does not pay `malloc` and `free` per request for that
//! (as Envoy keeps a per-thread free list of its buffer slices).

use std::cell::RefCell;

use bytes::BytesMut;

/// The size of a kept buffer: most request heads fit.
pub const SIZE: usize = 4 * 1024;

/// Buffers kept per thread at most (128 KiB); past that, given-back buffers are freed.
const KEPT: usize = 32;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer of at least [`SIZE`].
pub fn take() -> BytesMut {
    FREE.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| BytesMut::with_capacity(SIZE))
}

/// Gives back an empty buffer; one grown past [`SIZE`] (a large head or body) is freed.
pub fn give(mut buf: BytesMut) {
    buf.clear();
    if buf.try_reclaim(SIZE) && buf.capacity() == SIZE {
        FREE.with_borrow_mut(|free| {
            if free.len() < KEPT {
                free.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_and_a_grown_one_is_not_kept() {
        let mut buf = take();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let ptr = buf.as_ptr();
        give(buf);
        let again = take();
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty() && again.capacity() >= SIZE);
        let mut grown = again;
        grown.reserve(4 * SIZE);
        let ptr = grown.as_ptr();
        give(grown);
        assert_ne!(take().as_ptr(), ptr);
    }
}
