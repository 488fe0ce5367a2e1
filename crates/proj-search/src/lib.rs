//! Full-text search over the stream namespaces that enable it (`search = true`; `chat` and
//! `user` by default), as a projection.
//!
//! **Why tantivy.** The index lives inside the server, next to the log, with nothing else to
//! run or operate: tantivy is an embedded inverted index in pure Rust (no C or C++ library to
//! build, unlike SQLite FTS5 or Xapian), with BM25 scoring, phrase and prefix queries over
//! positions, fast fields to sort hits newest-first and filter by time, and an atomic commit
//! that carries an opaque payload. That payload is what makes it a projection with the
//! runner's exactly-once rules: the stream positions the index reflects are written in the
//! same commit as the documents (`meta.json` is replaced atomically), so after a crash the
//! index and its positions agree and the runner replays only what came after. Features are
//! lean: no stemmer or stop words (chat is many languages, and stemming one of them badly is
//! worse than none), lz4 (pure Rust) for the document store, mmap for reading.
//!
//! **What is indexed.** One document per message: its channel, offset, append time, author
//! (`from.sub`, and the whole `from` stamp for the hit), and its text (every string in its data
//! but the `from` stamp). Words are Unicode words (UAX #29), lowercased and folded to ASCII;
//! see [`text`]. An `$edit` record replaces its message's document (same channel, offset and
//! time, the new text); a `$delete` record removes it, for good. Records themselves are not
//! indexed.
//!
//! **Where.** `<data>/projections/search/index/`. A missing index, or one that cannot be
//! opened or has no positions, is removed and rebuilt from the streams (from what retention
//! kept).
//!
//! **Queries** are scoped before they run: per namespace, everything, the user's own channels
//! (`<ns>.<sub>` and below, as the query's own filter), or a namespace whose hits are each
//! checked against what the principal may read. Every hit passes that check in any case, so a
//! principal never sees a message of a channel it may not read.
//!
//! A commit makes new messages searchable; the runner checkpoints every
//! [`CHECKPOINT_INTERVAL`], so a message is found about that long after it is acknowledged.

pub mod text;

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use serde_json::value::RawValue;
use tantivy::{
    collector::TopDocs,
    query::{BooleanQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query, RangeQuery, TermQuery},
    schema::{
        Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED,
        STORED, STRING,
    },
    tokenizer::TextAnalyzer,
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
};
use tickwire_gateway::{NamespaceScope, Refusal, SearchHit, SearchResults, SearchService};
use tickwire_hub::{Channel, Class, Hub};
use tickwire_model::{amend, DataDir, Epoch, Offset, Publication};
use tickwire_projection::{
    Positions, Projection, ProjectionError, Runner, RunnerConfig, RunnerHandle, RunnerStats,
};
use tickwire_wire::{ErrorCode, SearchQuery, MAX_SEARCH_LIMIT, MAX_SEARCH_SKIP};

use text::{Part, ANALYZER};

/// How often the index commits (and new messages become searchable).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The indexing buffer: tantivy flushes a segment when it is full. 64 MB keeps segments few
/// while catching up on a large stream, and is well under what one namespace's ring holds.
const WRITER_MEMORY: usize = 64 * 1024 * 1024;

/// Hits a search returns when the query does not say.
const DEFAULT_LIMIT: u64 = 20;

/// Most documents read to fill one page when hits are checked one by one (a principal that
/// may read only some channels of a namespace): beyond it, `more` says to narrow the query.
const MAX_SCAN: usize = 20_000;

/// The version of the document layout; an index of another version is rebuilt.
const LAYOUT: u64 = 1;

/// What can fail in the search projection.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index {path}: {op}: {reason}")]
    Index {
        path: PathBuf,
        op: &'static str,
        reason: String,
    },
}

/// The fields of a message's document.
#[derive(Clone, Copy)]
struct Fields {
    /// `<namespace>:<offset>`: the document's identity, for replacing and removing it.
    key: Field,
    ns: Field,
    channel: Field,
    offset: Field,
    /// Append time, Unix ns: ordering (newest first) and `since`/`until`.
    ts: Field,
    /// `from.sub`.
    author: Field,
    /// The whole `from` stamp, JSON text.
    from: Field,
    text: Field,
    /// 1 once edited.
    edited: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_opts = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let fields = Fields {
        key: b.add_text_field("key", STRING),
        ns: b.add_text_field("ns", STRING),
        channel: b.add_text_field("channel", STRING | STORED),
        offset: b.add_u64_field("offset", STORED),
        ts: b.add_u64_field("ts", INDEXED | FAST | STORED),
        author: b.add_text_field("author", STRING),
        from: b.add_text_field("from", STORED),
        text: b.add_text_field("text", text_opts),
        edited: b.add_u64_field("edited", STORED),
    };
    (b.build(), fields)
}

fn key(ns: &str, offset: Offset) -> String {
    format!("{ns}:{offset}")
}

/// What the projection remembers of a document it added or removed since the last commit
/// (the reader does not see those yet): enough to re-index it on an edit.
#[derive(Clone)]
struct Meta {
    channel: String,
    ts: u64,
}

/// The index and what reads it; shared by the projection and the searches.
pub struct SearchState {
    path: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    analyzer: TextAnalyzer,
}

impl SearchState {
    fn err(&self, op: &'static str) -> impl Fn(&dyn std::fmt::Display) -> SearchError + '_ {
        move |e| SearchError::Index {
            path: self.path.clone(),
            op,
            reason: e.to_string(),
        }
    }

    /// Opens the index at `dir` and the positions of its last commit; an index that cannot be
    /// read as this version wrote it is removed and started again (empty positions: the
    /// runner rebuilds it from the streams).
    fn open(dir: &Path) -> Result<(SearchState, Positions), SearchError> {
        let fail = |op: &'static str| {
            move |e: &dyn std::fmt::Display| SearchError::Index {
                path: dir.to_path_buf(),
                op,
                reason: e.to_string(),
            }
        };
        let (schema, fields) = schema();
        let opened = if dir.join("meta.json").exists() {
            match Self::open_existing(dir, &schema) {
                Ok(x) => Some(x),
                Err(why) => {
                    tracing::warn!(path = %dir.display(), "search index unusable ({why}); rebuilding it from the streams");
                    None
                }
            }
        } else {
            None
        };
        let (index, positions) = match opened {
            Some(x) => x,
            None => {
                if dir.exists() {
                    std::fs::remove_dir_all(dir).map_err(|e| fail("remove")(&e))?;
                }
                std::fs::create_dir_all(dir).map_err(|e| fail("create dir")(&e))?;
                let index = Index::create_in_dir(dir, schema).map_err(|e| fail("create")(&e))?;
                (index, Positions::default())
            }
        };
        index.tokenizers().register(ANALYZER, text::analyzer());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| fail("open reader")(&e))?;
        Ok((
            SearchState {
                path: dir.to_path_buf(),
                index,
                reader,
                fields,
                analyzer: text::analyzer(),
            },
            positions,
        ))
    }

    fn open_existing(dir: &Path, schema: &Schema) -> Result<(Index, Positions), String> {
        let index = Index::open_in_dir(dir).map_err(|e| e.to_string())?;
        if index.schema() != *schema {
            return Err("its fields are not this version's".into());
        }
        let meta = index.load_metas().map_err(|e| e.to_string())?;
        let payload = meta
            .payload
            .ok_or_else(|| "no positions in its last commit".to_string())?;
        let positions = decode_positions(&payload)?;
        // Every segment the commit names must be there and readable.
        index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map(|_: IndexReader| ())
            .map_err(|e| e.to_string())?;
        Ok((index, positions))
    }

    fn doc_meta(&self, key: &str) -> Option<Meta> {
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.fields.key, key),
            IndexRecordOption::Basic,
        );
        let top = searcher
            .search(&q, &TopDocs::with_limit(1).order_by_score())
            .ok()?;
        let (_, addr) = top.first()?;
        let doc: TantivyDocument = searcher.doc(*addr).ok()?;
        Some(Meta {
            channel: doc.get_first(self.fields.channel)?.as_str()?.to_string(),
            ts: doc.get_first(self.fields.ts)?.as_u64()?,
        })
    }

    /// Documents in the index (committed).
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Runs `query` among `scope`, each hit also passing `readable`.
    pub fn run(
        &self,
        query: &SearchQuery,
        scope: &[(String, NamespaceScope)],
        readable: &dyn Fn(&Channel) -> bool,
    ) -> Result<SearchResults, Refusal> {
        let bad = |m: String| Refusal::new(ErrorCode::BadRequest, m);
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_SEARCH_LIMIT {
            return Err(bad(format!("`limit` must be 1 to {MAX_SEARCH_LIMIT}")));
        }
        let skip = query.skip.unwrap_or(0);
        if skip > MAX_SEARCH_SKIP {
            return Err(bad(format!("`skip` must be at most {MAX_SEARCH_SKIP}")));
        }
        let by_relevance = match query.order.as_deref() {
            None | Some("newest") => false,
            Some("relevance") => true,
            Some(o) => {
                return Err(bad(format!(
                    "`order` must be `newest` or `relevance`, not `{o}`"
                )))
            }
        };
        let (limit, skip) = (limit as usize, skip as usize);
        let mut analyzer = self.analyzer.clone();
        let parsed = text::parse_query(&mut analyzer, &query.q);
        if parsed.must.is_empty() {
            return Err(bad(
                "the query has no word to look for: words, \"a phrase\", prefix*, -excluded".into(),
            ));
        }
        let f = self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for p in &parsed.must {
            clauses.push((Occur::Must, self.part_query(p)));
        }
        for p in &parsed.must_not {
            clauses.push((Occur::MustNot, self.part_query(p)));
        }
        // Where: the namespaces (and, for a user's own, channels) the principal may search.
        let mut wheres: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (ns, s) in scope {
            match s {
                NamespaceScope::All | NamespaceScope::Filtered => wheres.push((
                    Occur::Should,
                    Box::new(TermQuery::new(
                        Term::from_field_text(f.ns, ns),
                        IndexRecordOption::Basic,
                    )),
                )),
                NamespaceScope::Own(sub) => {
                    let own = format!("{ns}.{sub}");
                    wheres.push((
                        Occur::Should,
                        Box::new(TermQuery::new(
                            Term::from_field_text(f.channel, &own),
                            IndexRecordOption::Basic,
                        )),
                    ));
                    // `<ns>.<sub>.` up to (not including) `<ns>.<sub>/`: '/' follows '.'.
                    wheres.push((
                        Occur::Should,
                        Box::new(RangeQuery::new(
                            Bound::Included(Term::from_field_text(f.channel, &format!("{own}."))),
                            Bound::Excluded(Term::from_field_text(f.channel, &format!("{own}/"))),
                        )),
                    ));
                }
            }
        }
        if wheres.is_empty() {
            return Ok(SearchResults::default());
        }
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(wheres))));
        if let Some(ch) = &query.channel {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.channel, ch.as_str()),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if let Some(u) = &query.from_user {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.author, u),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if query.since.is_some() || query.until.is_some() {
            let ns = |ms: u64| Term::from_field_u64(f.ts, ms.saturating_mul(1_000_000));
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    query
                        .since
                        .map_or(Bound::Unbounded, |s| Bound::Included(ns(s))),
                    query
                        .until
                        .map_or(Bound::Unbounded, |u| Bound::Excluded(ns(u))),
                )),
            ));
        }
        let q = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let internal = |e: tantivy::TantivyError| {
            Refusal::new(ErrorCode::Internal, format!("search index: {e}"))
        };
        // Hits are checked one by one against what the principal may read; read more until
        // the page is full (a skipped hit must not shorten the page or shift the next).
        let want = skip + limit + 1;
        let mut fetch = want;
        let (hits, more) = loop {
            let found: Vec<(Option<f32>, DocAddress)> = if by_relevance {
                searcher
                    .search(&q, &TopDocs::with_limit(fetch).order_by_score())
                    .map_err(internal)?
                    .into_iter()
                    .map(|(s, a)| (Some(s), a))
                    .collect()
            } else {
                searcher
                    .search(
                        &q,
                        &TopDocs::with_limit(fetch).order_by_fast_field::<u64>("ts", Order::Desc),
                    )
                    .map_err(internal)?
                    .into_iter()
                    .map(|(_, a)| (None, a))
                    .collect()
            };
            let exhausted = found.len() < fetch;
            let mut hits = Vec::new();
            for (score, addr) in found {
                let doc: TantivyDocument = searcher.doc(addr).map_err(internal)?;
                let Some(hit) = self.hit(&doc, score, &parsed, &mut analyzer) else {
                    continue;
                };
                let readable = Channel::parse(&hit.channel).is_ok_and(|c| readable(&c));
                if readable {
                    hits.push(hit);
                }
                if hits.len() >= want {
                    break;
                }
            }
            if hits.len() >= want || exhausted || fetch >= MAX_SCAN {
                let more = hits.len() > skip + limit || (!exhausted && hits.len() < want);
                break (hits, more);
            }
            fetch = (fetch * 4).min(MAX_SCAN);
        };
        Ok(SearchResults {
            hits: hits.into_iter().skip(skip).take(limit).collect(),
            more,
        })
    }

    fn part_query(&self, p: &Part) -> Box<dyn Query> {
        let f = self.fields.text;
        let term = |w: &String| Term::from_field_text(f, w);
        match p {
            Part::Phrase(w) if w.len() == 1 => Box::new(TermQuery::new(
                term(&w[0]),
                IndexRecordOption::WithFreqsAndPositions,
            )),
            Part::Phrase(w) => Box::new(PhraseQuery::new(w.iter().map(term).collect())),
            Part::Prefix(w) => Box::new(PhrasePrefixQuery::new(w.iter().map(term).collect())),
        }
    }

    fn hit(
        &self,
        doc: &TantivyDocument,
        score: Option<f32>,
        parsed: &text::Parsed,
        analyzer: &mut TextAnalyzer,
    ) -> Option<SearchHit> {
        let f = self.fields;
        let text = doc.get_first(f.text).and_then(|v| v.as_str()).unwrap_or("");
        let (exact, prefixes) = parsed.marks();
        Some(SearchHit {
            channel: doc.get_first(f.channel)?.as_str()?.to_string(),
            offset: doc.get_first(f.offset)?.as_u64()?,
            ts: doc.get_first(f.ts)?.as_u64()? / 1_000_000,
            from: doc
                .get_first(f.from)
                .and_then(|v| v.as_str())
                .and_then(|s| RawValue::from_string(s.to_string()).ok()),
            snippet: text::snippet(analyzer, text, &exact, &prefixes),
            score,
            edited: doc.get_first(f.edited).and_then(|v| v.as_u64()) == Some(1),
        })
    }
}

impl SearchService for SearchState {
    fn search(
        &self,
        query: &SearchQuery,
        scope: &[(String, NamespaceScope)],
        readable: &dyn Fn(&Channel) -> bool,
    ) -> Result<SearchResults, Refusal> {
        self.run(query, scope, readable)
    }
}

/// The `from` stamp of a message's data, as written.
fn raw_from(data: &[u8]) -> Option<Box<RawValue>> {
    #[derive(serde::Deserialize)]
    struct F {
        from: Option<Box<RawValue>>,
    }
    serde_json::from_slice::<F>(data)
        .ok()?
        .from
        .filter(|f| f.get().starts_with('{'))
}

fn encode_positions(p: &Positions) -> String {
    let epochs: BTreeMap<&String, u64> = p.epochs.iter().map(|(k, e)| (k, e.0)).collect();
    serde_json::json!({"layout": LAYOUT, "next": p.next, "epochs": epochs}).to_string()
}

fn decode_positions(s: &str) -> Result<Positions, String> {
    #[derive(serde::Deserialize)]
    struct P {
        layout: u64,
        next: BTreeMap<String, Offset>,
        epochs: BTreeMap<String, u64>,
    }
    let p: P = serde_json::from_str(s).map_err(|e| format!("positions unreadable: {e}"))?;
    if p.layout != LAYOUT {
        return Err(format!("layout {} is not {LAYOUT}", p.layout));
    }
    Ok(Positions {
        next: p.next,
        epochs: p.epochs.into_iter().map(|(k, e)| (k, Epoch(e))).collect(),
    })
}

/// The projection: applies messages and amendments to the index writer, commits with the
/// positions.
pub struct SearchProjection {
    state: Arc<SearchState>,
    writer: IndexWriter,
    restored: Option<Positions>,
    /// Documents added (`Some`) or removed (`None`) since the last commit.
    pending: HashMap<String, Option<Meta>>,
    dirty: bool,
    written: Option<Positions>,
    /// Namespace → its `retention_age`: messages older than that are gone from the stream,
    /// so they leave the index too (history could not show them).
    retention: Vec<(String, Duration)>,
    /// When retention last ran (runner clock, Unix ms).
    pruned_at: i64,
}

/// How often documents past their namespace's retention age are removed.
const PRUNE_EVERY_MS: i64 = 60_000;

impl SearchProjection {
    /// Opens (or rebuilds) the index in `dir`, with its writer.
    pub fn open(dir: &Path) -> Result<(Arc<SearchState>, SearchProjection), SearchError> {
        let (state, positions) = SearchState::open(dir)?;
        let writer = state
            .index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(|e| state.err("open writer")(&e))?;
        let state = Arc::new(state);
        Ok((
            state.clone(),
            SearchProjection {
                state,
                writer,
                restored: Some(positions),
                pending: HashMap::new(),
                dirty: false,
                written: None,
                retention: Vec::new(),
                pruned_at: 0,
            },
        ))
    }

    fn meta(&self, key: &str) -> Option<Meta> {
        match self.pending.get(key) {
            Some(m) => m.clone(),
            None => self.state.doc_meta(key),
        }
    }

    fn add(&mut self, p: &Publication, offset: Offset, ts: u64, data: &[u8], edited: bool) {
        let f = self.state.fields;
        let ns = p.channel.namespace();
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        let k = key(ns, offset);
        let mut doc = TantivyDocument::default();
        doc.add_text(f.key, &k);
        doc.add_text(f.ns, ns);
        doc.add_text(f.channel, p.channel.as_str());
        doc.add_u64(f.offset, offset);
        doc.add_u64(f.ts, ts);
        if let Some(sub) = value
            .get("from")
            .and_then(|from| from.get("sub"))
            .and_then(|s| s.as_str())
        {
            doc.add_text(f.author, sub);
        }
        // The stamp as it was written (key order kept) for the hit.
        if let Some(from) = raw_from(data) {
            doc.add_text(f.from, from.get());
        }
        doc.add_text(f.text, text::message_text(&value));
        if edited {
            doc.add_u64(f.edited, 1);
        }
        if let Err(e) = self.writer.add_document(doc) {
            tracing::error!("search index: adding {k}: {e}");
            return;
        }
        self.pending.insert(
            k,
            Some(Meta {
                channel: p.channel.as_str().to_string(),
                ts,
            }),
        );
        self.dirty = true;
    }

    fn apply_amend(&mut self, p: &Publication, a: &amend::Amendment<'_>) {
        // A record names an earlier message of its own channel.
        if a.target >= p.offset {
            return;
        }
        let k = key(p.channel.namespace(), a.target);
        let Some(meta) = self.meta(&k) else {
            // Never indexed, or deleted: a tombstone is final.
            return;
        };
        if meta.channel != p.channel.as_str() {
            return;
        }
        self.writer
            .delete_term(Term::from_field_text(self.state.fields.key, &k));
        self.dirty = true;
        match a.change {
            amend::Change::Edit(data) => {
                self.add(p, a.target, meta.ts, data.as_bytes(), true);
            }
            amend::Change::Delete => {
                self.pending.insert(k, None);
            }
        }
    }
}

impl Projection for SearchProjection {
    fn name(&self) -> &str {
        "search"
    }

    fn restore(&mut self) -> Result<Positions, ProjectionError> {
        Ok(self.restored.take().unwrap_or_default())
    }

    fn apply(&mut self, _source: usize, p: &Publication) {
        match amend::parse(&p.data) {
            Some(a) => self.apply_amend(p, &a),
            None => self.add(p, p.offset, p.timestamp, &p.data, false),
        }
    }

    fn tick(&mut self, now_ms: i64) {
        if now_ms - self.pruned_at < PRUNE_EVERY_MS || self.retention.is_empty() {
            return;
        }
        self.pruned_at = now_ms;
        let f = self.state.fields;
        for (ns, age) in &self.retention {
            let cutoff = u64::try_from(now_ms)
                .unwrap_or(0)
                .saturating_sub(age.as_millis() as u64)
                .saturating_mul(1_000_000);
            let old = BooleanQuery::new(vec![
                (
                    Occur::Must,
                    Box::new(TermQuery::new(
                        Term::from_field_text(f.ns, ns),
                        IndexRecordOption::Basic,
                    )) as Box<dyn Query>,
                ),
                (
                    Occur::Must,
                    Box::new(RangeQuery::new(
                        Bound::Unbounded,
                        Bound::Excluded(Term::from_field_u64(f.ts, cutoff)),
                    )),
                ),
            ]);
            match self.writer.delete_query(Box::new(old)) {
                Ok(_) => self.dirty = true,
                Err(e) => tracing::warn!("search index: removing `{ns}` past retention: {e}"),
            }
        }
    }

    fn derived(&mut self) -> Vec<Vec<tickwire_hub::PublishRequest>> {
        Vec::new()
    }

    fn checkpoint(&mut self, positions: &Positions) -> Result<(), ProjectionError> {
        if !self.dirty && self.written.as_ref() == Some(positions) {
            return Ok(());
        }
        let e = |op: &'static str| {
            let st = self.state.clone();
            move |e: tantivy::TantivyError| ProjectionError::state("search", st.err(op)(&e))
        };
        let mut prepared = self.writer.prepare_commit().map_err(e("prepare commit"))?;
        prepared.set_payload(&encode_positions(positions));
        prepared.commit().map_err(e("commit"))?;
        self.state.reader.reload().map_err(e("reload"))?;
        self.pending.clear();
        self.dirty = false;
        self.written = Some(positions.clone());
        Ok(())
    }
}

/// The running search projection.
pub struct SearchIndexService {
    pub state: Arc<SearchState>,
    pub runner_stats: Arc<RunnerStats>,
    runner: Mutex<Option<RunnerHandle>>,
}

impl SearchIndexService {
    /// Stops the projection after a last commit.
    pub fn stop(&self) {
        let handle = self.runner.lock().take();
        if let Some(mut h) = handle {
            h.stop();
        }
    }
}

/// Starts the search projection over the stream namespaces with `search = true`; `None` when
/// there are none.
pub fn start(
    hub: Arc<Hub>,
    data: &DataDir,
) -> Result<Option<Arc<SearchIndexService>>, ProjectionError> {
    let specs: Vec<_> = hub
        .namespaces()
        .into_iter()
        .filter(|s| s.search && s.class == Class::Stream)
        .collect();
    if specs.is_empty() {
        return Ok(None);
    }
    let dir = data.projection("search").join("index");
    let (state, mut projection) =
        SearchProjection::open(&dir).map_err(|e| ProjectionError::state("search", e))?;
    projection.retention = specs
        .iter()
        .filter_map(|s| s.retention_age.map(|a| (s.name.clone(), a)))
        .collect();
    let sources = specs.into_iter().map(|s| s.name).collect();
    let handle = Runner::spawn(
        hub,
        projection,
        RunnerConfig {
            sources,
            flush_interval: Duration::from_millis(100),
            checkpoint_interval: CHECKPOINT_INTERVAL,
        },
    )?;
    Ok(Some(Arc::new(SearchIndexService {
        state,
        runner_stats: handle.stats.clone(),
        runner: Mutex::new(Some(handle)),
    })))
}

#[cfg(test)]
mod tests;
