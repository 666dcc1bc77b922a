//! Tensor names as the engine asks for them, re-exported by [`crate::format`]. A leaf module:
//! [`crate::Error`] carries a [`TensorName`], so this imports nothing of the crate (neither
//! the error type nor the container that returns it).

use core::fmt;

/// Longest tensor name, bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// The name of a tensor the engine asks for: a global one (`tok_emb`) or one of block `layer`
/// (`l3.q.w` is `TensorName::layer(3, "q.w")`). Static parts, so errors can carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TensorName {
    /// Block index, for per-block tensors.
    pub layer: Option<u32>,
    /// The name, or the part after `l{layer}.`.
    pub name: &'static str,
}

impl TensorName {
    /// A model-wide tensor, e.g. `tok_emb`.
    pub const fn global(name: &'static str) -> Self {
        TensorName { layer: None, name }
    }

    /// A tensor of block `layer`, e.g. `layer(0, "q.w")` for `l0.q.w`.
    pub const fn layer(layer: usize, name: &'static str) -> Self {
        TensorName {
            layer: Some(layer as u32),
            name,
        }
    }

    /// Writes the full name into `buf`; `None` when it does not fit.
    pub fn write<'b>(&self, buf: &'b mut [u8; MAX_NAME_BYTES]) -> Option<&'b str> {
        let mut n = 0;
        let mut push = |bytes: &[u8], n: &mut usize| -> Option<()> {
            buf.get_mut(*n..*n + bytes.len())?.copy_from_slice(bytes);
            *n += bytes.len();
            Some(())
        };
        if let Some(l) = self.layer {
            let mut digits = [0u8; 10];
            let mut k = digits.len();
            let mut v = l;
            loop {
                k = k.checked_sub(1)?;
                *digits.get_mut(k)? = b'0' + (v % 10) as u8;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            push(b"l", &mut n)?;
            push(digits.get(k..)?, &mut n)?;
            push(b".", &mut n)?;
        }
        push(self.name.as_bytes(), &mut n)?;
        core::str::from_utf8(&buf[..n]).ok()
    }
}

impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(l) => write!(f, "l{l}.{}", self.name),
            None => f.write_str(self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names() {
        let mut buf = [0u8; MAX_NAME_BYTES];
        assert_eq!(
            TensorName::layer(12, "ffn.up.w").write(&mut buf),
            Some("l12.ffn.up.w")
        );
        assert_eq!(
            TensorName::global("tok_emb").write(&mut buf),
            Some("tok_emb")
        );
        assert_eq!(TensorName::layer(0, "q.b").write(&mut buf), Some("l0.q.b"));
        let long = TensorName::layer(1, core::str::from_utf8(&[b'x'; MAX_NAME_BYTES]).unwrap());
        assert_eq!(long.write(&mut buf), None);
    }
}
