//! What the fuzz targets share: how an input is laid out, and how its stream is
//! cut into the pieces a socket would hand over.
//!
//! An input is (see make_corpus.py, which writes seeds in this layout):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | flags: which configuration (each target says how it reads them) |
//! | 1 | limits: which `max_header` / `max_body` (idem) |
//! | 2 | `k`, the number of piece sizes that follow |
//! | 3 .. 3+k | piece sizes, used in turn until the stream runs out (0: an empty read) |
//! | the rest | the byte stream |
//!
//! A plain layout rather than `arbitrary`: seeds are easy to write from Python,
//! and a mutation of the stream does not shift the configuration.

/// One fuzz input, cut into its fields.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub flags: u8,
    pub limits: u8,
    pub sizes: &'a [u8],
    pub stream: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        let (&[flags, limits, k], rest) = data.split_first_chunk::<3>()?;
        let k = (k as usize).min(rest.len());
        let (sizes, stream) = rest.split_at(k);
        Some(Input { flags, limits, sizes, stream })
    }

    /// The stream cut into pieces by the sizes, in turn. No sizes: one piece.
    /// A size of 0 is an empty piece (a read that brought nothing new); if all
    /// are 0, the stream still comes, whole, after them.
    pub fn pieces(&self) -> Vec<&'a [u8]> {
        pieces(self.stream, self.sizes)
    }
}

pub fn pieces<'a>(stream: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    if sizes.iter().all(|&s| s == 0) {
        let mut out: Vec<&[u8]> = sizes.iter().map(|_| &stream[..0]).collect();
        out.push(stream);
        return out;
    }
    let mut out = vec![];
    let mut rest = stream;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((size as usize).min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out
}

/// A byte source that hands out the stream in the input's piece sizes (at
/// least one byte per read, as a blocking read does), like a socket under load.
pub struct Trickle<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl<'a> Trickle<'a> {
    pub fn new(data: &'a [u8], sizes: &'a [u8]) -> Trickle<'a> {
        Trickle { data, sizes, turn: 0 }
    }
}

impl _rframe::io::read::ByteSource for Trickle<'_> {
    type Error = std::convert::Infallible;
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let size = match self.sizes {
            [] => usize::MAX,
            sizes => (sizes[self.turn % sizes.len()] as usize).max(1),
        };
        self.turn += 1;
        let n = buf.len().min(size).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A body buffer that grows with the bytes that arrive, so an announced
/// 256 MiB body that never comes costs nothing (as the Python bindings' does).
pub struct GrowingBody {
    size: usize,
    bytes: Vec<u8>,
}

impl GrowingBody {
    pub fn new(size: usize) -> GrowingBody {
        GrowingBody { size, bytes: Vec::new() }
    }

    pub fn into_vec(self) -> Vec<u8> {
        assert_eq!(self.bytes.len(), self.size, "a body is returned only once full");
        self.bytes
    }
}

impl AsRef<[u8]> for GrowingBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl _rframe::io::read::BodyBuffer for GrowingBody {
    fn size(&self) -> usize {
        self.size
    }
    fn window(&mut self, filled: usize) -> &mut [u8] {
        if self.bytes.len() <= filled {
            let want = (filled + 4096).min(self.size);
            self.bytes.resize(want, 0);
        }
        &mut self.bytes[filled..]
    }
}
