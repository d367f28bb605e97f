//! Our `ArrowIPC` layout's stream, written straight into its blob: a
//! counting pass sizes the blob (it touches no data, only lengths), and
//! the put then has the stream written into the blob itself, with no
//! stream assembled anywhere first.

use std::io::Write;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::SchemaRef;

use super::write::arrow_error;
use crate::store::Fill;
use crate::Result;

/// The batches of one stream, and the stream's length.
pub struct IpcStream {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    len: usize,
}

/// Counts what is written to it.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_stream<W: Write>(
    out: W,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> std::result::Result<(), arrow_schema::ArrowError> {
    let mut writer = StreamWriter::try_new(out, schema)?;
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()
}

impl IpcStream {
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<IpcStream> {
        let mut counter = Counter(0);
        write_stream(&mut counter, &schema, &batches).map_err(arrow_error)?;
        Ok(IpcStream {
            schema,
            batches,
            len: counter.0,
        })
    }

    /// Bytes of the stream.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The stream in a buffer of its own (for tests and `tobytes`).
    pub fn to_buffer(&self) -> Result<Buffer> {
        let mut out = vec![0u8; self.len];
        self.fill(&mut out).map_err(crate::Error::Unsupported)?;
        Ok(Buffer::from_vec(out))
    }
}

impl Fill for IpcStream {
    fn fill(&self, out: &mut [u8]) -> std::result::Result<(), String> {
        if out.len() != self.len {
            return Err(format!(
                "an Arrow IPC stream of {} bytes given {} bytes",
                self.len,
                out.len()
            ));
        }
        let mut rest: &mut [u8] = out;
        write_stream(&mut rest, &self.schema, &self.batches)
            .map_err(|e| format!("cannot write the Arrow IPC stream: {e}"))?;
        if !rest.is_empty() {
            return Err(format!(
                "the Arrow IPC stream came out {} bytes short",
                rest.len()
            ));
        }
        Ok(())
    }
}

/// One blob of a written layout: bytes to copy, or a stream to write.
pub enum Part {
    Bytes(Buffer),
    Ipc(IpcStream),
}

impl Part {
    pub fn len(&self) -> usize {
        match self {
            Part::Bytes(b) => b.len(),
            Part::Ipc(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, made for a stream.
    pub fn to_buffer(&self) -> Result<Buffer> {
        match self {
            Part::Bytes(b) => Ok(b.clone()),
            Part::Ipc(s) => s.to_buffer(),
        }
    }
}
