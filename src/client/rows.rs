//! [`RowStream`]: the rows of a [`RawStream`], decoded one by one.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use super::{Error, RawStream, Summary};

/// The rows of one query, decoded as `T`, across every resume.
///
/// Rows are handed out as they arrive, each one checked by the verifier as
/// it passes; the whole result is verified when [`RowStream::next`]
/// returned `None` and [`Summary::verified`] is true (an `Err` otherwise
/// ended it). Dropping the stream before its end cancels the cursor.
pub struct RowStream<T> {
    raw: RawStream,
    /// Next row of the current batch.
    pos: usize,
    /// Rows handed out before the current batch.
    batch_start: u64,
    /// Rows in the current batch.
    batch_len: usize,
    _row: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for RowStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowStream").field("raw", &self.raw).finish()
    }
}

impl<T: DeserializeOwned> RowStream<T> {
    pub(crate) fn new(raw: RawStream) -> RowStream<T> {
        RowStream {
            raw,
            pos: 0,
            batch_start: 0,
            batch_len: 0,
            _row: PhantomData,
        }
    }

    /// The next row; `None` at the end (check [`Summary::verified`]) or
    /// after an error. A row that does not decode as `T` is an
    /// [`Error::Decode`] and the stream goes on with the next one.
    pub async fn next(&mut self) -> Option<Result<T, Error>> {
        loop {
            if self.pos < self.batch_len {
                let i = self.pos;
                self.pos += 1;
                let value = self.raw.batch_value(i)?;
                let row = self.batch_start + i as u64;
                return Some(
                    serde_json::from_str(value).map_err(|source| Error::Decode { row, source }),
                );
            }
            let before = self.raw.summary().row_count;
            match self.raw.next_batch().await {
                Ok(Some(b)) => {
                    self.batch_len = b.len();
                    self.batch_start = before;
                    self.pos = 0;
                }
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Every remaining row, and the summary of the verified stream.
    ///
    /// # Errors
    ///
    /// The first error of the stream (a row that does not decode included).
    pub async fn collect_verified(mut self) -> Result<(Vec<T>, Summary), Error> {
        let mut rows = Vec::new();
        while let Some(r) = self.next().await {
            rows.push(r?);
        }
        Ok((rows, self.raw.summary().clone()))
    }

    /// The rows as a [`futures_util::Stream`].
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<T, Error>> {
        futures_util::stream::unfold(self, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        })
    }
}

impl<T> RowStream<T> {
    /// What the stream did so far.
    pub fn summary(&self) -> &Summary {
        self.raw.summary()
    }

    /// Stops the stream and cancels the server cursor, waiting for the
    /// answer (dropping the stream does the same in the background).
    pub async fn cancel(self) {
        self.raw.cancel().await;
    }
}
