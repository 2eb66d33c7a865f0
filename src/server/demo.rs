//! The demo database: a deterministic, realistic SQLite file for `scripts/demo.sh`,
//! the demo page and the browser end-to-end test.
//!
//! Three tables:
//!
//! - `events` (the big one, `rows` rows): timestamps, users, products, event
//!   kinds, countries and cities with non-ASCII names, amounts with NULLs,
//!   64-bit integers beyond 2^53 (including `i64::MIN`/`i64::MAX`) and notes
//!   that exercise JSON escaping (quotes, backslashes, newlines, emoji).
//! - `users` (10,000 rows) and `products` (500 rows), to join and aggregate.
//!
//! Generation is fast (one transaction, prepared statements, `synchronous=OFF`
//! while building) and crash-safe: the file is built as `<path>.partial` and
//! renamed over `path` only once complete, so an interrupted run never leaves
//! a half database that a later run would reuse. A `demo_meta` table records
//! the schema version and row count, so callers can tell whether an existing
//! file is what they asked for ([`is_current`]).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};

/// Bumped whenever the schema or the generated data change.
pub const SCHEMA_VERSION: i64 = 1;

/// Rows of `users`.
pub const USERS: u64 = 10_000;

/// Rows of `products`.
pub const PRODUCTS: u64 = 500;

/// Seed of the data; the same seed and row count give the same file contents.
const SEED: u64 = 0x5EED_DA7A_2025_0001;

/// 2025-01-01T00:00:00Z in Unix milliseconds: the first event's time.
const START_MS: i64 = 1_735_689_600_000;

/// How often `generate` reports progress (rows of `events`).
const PROGRESS_EVERY: u64 = 10_000;

/// Countries and cities: ISO 3166 code, city (UTF-8, several scripts).
const CITIES: &[(&str, &str)] = &[
    ("BR", "São Paulo"),
    ("CH", "Zürich"),
    ("PL", "Kraków"),
    ("JP", "東京"),
    ("RU", "Москва"),
    ("DE", "München"),
    ("FR", "Besançon"),
    ("IS", "Reykjavík"),
    ("TR", "İstanbul"),
    ("KR", "서울"),
    ("GR", "Αθήνα"),
    ("IN", "मुंबई"),
    ("CN", "北京"),
    ("VN", "Hà Nội"),
    ("ES", "A Coruña"),
    ("NO", "Tromsø"),
    ("DK", "Aarhus"),
    ("MX", "Ciudad de México"),
    ("US", "San José"),
    ("US", "New York"),
    ("GB", "London"),
    ("CZ", "Brno"),
    ("EG", "القاهرة"),
    ("IL", "תל אביב"),
];

/// Event kinds with their relative weights.
const KINDS: &[(&str, u32)] = &[
    ("page_view", 50),
    ("click", 20),
    ("search", 10),
    ("add_to_cart", 8),
    ("purchase", 6),
    ("login", 4),
    ("refund", 1),
    ("signup", 1),
];

const FIRST_NAMES: &[&str] = &[
    "Ana",
    "João",
    "Lukas",
    "Zoë",
    "Søren",
    "Małgorzata",
    "Ivan",
    "Юлия",
    "Yuki",
    "さくら",
    "Min-jun",
    "지민",
    "Priya",
    "Arjun",
    "Élodie",
    "François",
    "Björk",
    "Ömer",
    "Nikos",
    "Μαρία",
    "Wei",
    "李娜",
    "Mai",
    "José",
    "Chloé",
    "Ahmed",
    "Noa",
    "Olivia",
    "Liam",
    "Dvořák",
];

const LAST_NAMES: &[&str] = &[
    "Silva",
    "Müller",
    "Nowak",
    "Ivanova",
    "Tanaka",
    "山田",
    "Kim",
    "Patel",
    "Dubois",
    "Jónsdóttir",
    "Yılmaz",
    "Papadopoulos",
    "Wang",
    "Nguyễn",
    "García",
    "Hansen",
    "Smith",
    "O'Brien",
    "Novák",
    "Cohen",
];

const PLANS: &[&str] = &["free", "free", "free", "pro", "pro", "team", "enterprise"];

const CATEGORIES: &[&str] = &[
    "books", "music", "garden", "kitchen", "outdoor", "toys", "office", "games",
];

const ADJECTIVES: &[&str] = &[
    "Compact", "Deluxe", "Eco", "Classic", "Smart", "Ultra", "Mini", "Pro", "Vintage", "Nordic",
];

const NOUNS: &[&str] = &[
    "Lamp",
    "Kettle",
    "Backpack",
    "Notebook",
    "Speaker",
    "Chair",
    "Puzzle",
    "Tent",
    "Mug",
    "Headphones",
    "Café Grinder",
    "Crème Brûlée Torch",
];

const NOTES: &[&str] = &[
    "first visit from newsletter",
    "promo code SPRING25 applied",
    "customer said \"great service\"",
    "path C:\\Users\\demo\\cart.json",
    "multi-line\nnote with a tab\there",
    "🎉 loyalty milestone",
    "paid with gift card — remaining balance 0",
    "retried after timeout",
    "Grüße aus Zürich",
    "ありがとうございました",
];

/// A tiny, fast, deterministic PRNG (SplitMix64); good enough for demo data.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (proleptic Gregorian, UTC).
pub fn iso8601_ms(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let ms_of_day = unix_ms.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// The 64-bit value of `events.big` for row `id`: mostly beyond 2^53, where
/// an f64 would round it, plus the extremes and a few small and NULL values.
fn big_value(id: u64, rng: &mut SplitMix64) -> Option<i64> {
    const TWO_53: i64 = 1 << 53;
    match id % 50 {
        0 => Some(i64::MAX),
        1 => Some(i64::MIN),
        2 => Some(9_007_199_254_740_993), // 2^53 + 1, the first integer f64 cannot hold
        3 => None,
        4..=9 => Some(rng.below(1_000_000) as i64 - 500_000),
        _ => {
            let v = TWO_53 + 1 + (rng.next_u64() >> 2) as i64 % (i64::MAX - TWO_53 - 1);
            Some(if rng.chance(0.25) { -v } else { v })
        }
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn remove_db_files(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

/// True when `path` is a complete demo database of this schema version and
/// seed with exactly `rows` events (as written by [`generate`]).
pub fn is_current(path: &Path, rows: u64) -> bool {
    if !path.is_file() {
        return false;
    }
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE) else {
        return false;
    };
    let meta = conn.query_row(
        "SELECT schema_version, events, seed FROM demo_meta",
        [],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        },
    );
    matches!(meta, Ok((v, n, seed))
        if v == SCHEMA_VERSION && u64::try_from(n).ok() == Some(rows) && seed as u64 == SEED)
}

/// Creates the demo database at `path` (replacing any file there) with `rows`
/// rows in `events`. `progress(done, total)` is called every few thousand
/// events and once at the end with `done == total`.
pub fn generate(
    path: &Path,
    rows: u64,
    mut progress: impl FnMut(u64, u64),
) -> rusqlite::Result<()> {
    let tmp = partial_path(path);
    remove_db_files(&tmp);
    let result = (|| {
        let mut conn = Connection::open(&tmp)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        debug_assert_eq!(mode, "wal");
        conn.execute_batch(
            "PRAGMA synchronous=OFF;
             PRAGMA cache_size=-65536;
             PRAGMA temp_store=MEMORY;",
        )?;
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE users(
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                email TEXT NOT NULL,
                country TEXT NOT NULL,
                city TEXT NOT NULL,
                plan TEXT NOT NULL,
                signed_up TEXT NOT NULL
             );
             CREATE TABLE products(
                id INTEGER PRIMARY KEY,
                sku TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL,
                category TEXT NOT NULL,
                price REAL NOT NULL
             );
             CREATE TABLE events(
                id INTEGER PRIMARY KEY,
                ts TEXT NOT NULL,
                user_id INTEGER NOT NULL REFERENCES users(id),
                product_id INTEGER REFERENCES products(id),
                kind TEXT NOT NULL,
                country TEXT NOT NULL,
                city TEXT NOT NULL,
                amount REAL,
                big INTEGER,
                note TEXT
             );
             CREATE TABLE demo_meta(
                schema_version INTEGER NOT NULL,
                events INTEGER NOT NULL,
                users INTEGER NOT NULL,
                products INTEGER NOT NULL,
                seed INTEGER NOT NULL
             );",
        )?;
        let mut rng = SplitMix64::new(SEED);
        let mut prices = Vec::with_capacity(PRODUCTS as usize);
        {
            let mut ins = tx.prepare(
                "INSERT INTO products(id, sku, name, category, price) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for id in 1..=PRODUCTS {
                let category = *rng.pick(CATEGORIES);
                let name = format!("{} {}", rng.pick(ADJECTIVES), rng.pick(NOUNS));
                let price = (rng.below(20_000) as f64 + 99.0) / 100.0;
                prices.push(price);
                ins.execute(params![
                    id as i64,
                    format!("{}-{id:05}", &category[..3].to_uppercase()),
                    name,
                    category,
                    price
                ])?;
            }
        }
        let mut homes = Vec::with_capacity(USERS as usize);
        {
            let mut ins = tx.prepare(
                "INSERT INTO users(id, name, email, country, city, plan, signed_up)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for id in 1..=USERS {
                let first = *rng.pick(FIRST_NAMES);
                let last = *rng.pick(LAST_NAMES);
                let home = rng.below(CITIES.len() as u64) as usize;
                homes.push(home);
                let (country, city) = CITIES[home];
                let signed_up = START_MS - rng.below(3 * 365 * 86_400_000) as i64;
                ins.execute(params![
                    id as i64,
                    format!("{first} {last}"),
                    format!("user{id}@example.{}", country.to_lowercase()),
                    country,
                    city,
                    *rng.pick(PLANS),
                    iso8601_ms(signed_up),
                ])?;
            }
        }
        {
            let total_weight: u32 = KINDS.iter().map(|k| k.1).sum();
            let mut ins = tx.prepare(
                "INSERT INTO events(id, ts, user_id, product_id, kind, country, city, amount, big, note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            let mut ts = START_MS;
            for id in 1..=rows {
                ts += rng.below(30_000) as i64;
                let user = rng.below(USERS) as usize;
                let mut w = rng.below(u64::from(total_weight)) as u32;
                let kind = KINDS
                    .iter()
                    .find(|(_, weight)| {
                        if w < *weight {
                            true
                        } else {
                            w -= weight;
                            false
                        }
                    })
                    .map_or("page_view", |k| k.0);
                // Most events happen at home; travellers show up elsewhere.
                let place = if rng.chance(0.9) {
                    homes[user]
                } else {
                    rng.below(CITIES.len() as u64) as usize
                };
                let (country, city) = CITIES[place];
                let product = match kind {
                    "login" | "signup" | "search" => None,
                    _ => Some(rng.below(PRODUCTS) as usize),
                };
                let amount = match (kind, product) {
                    ("purchase", Some(p)) | ("add_to_cart", Some(p)) => {
                        Some(prices[p] * (1 + rng.below(4)) as f64)
                    }
                    ("refund", Some(p)) => Some(-prices[p]),
                    _ => None,
                };
                let note = if rng.chance(0.03) {
                    Some(*rng.pick(NOTES))
                } else {
                    None
                };
                ins.execute(params![
                    id as i64,
                    iso8601_ms(ts),
                    user as i64 + 1,
                    product.map(|p| p as i64 + 1),
                    kind,
                    country,
                    city,
                    amount.map(|a| (a * 100.0).round() / 100.0),
                    big_value(id, &mut rng),
                    note,
                ])?;
                if id % PROGRESS_EVERY == 0 {
                    progress(id, rows);
                }
            }
        }
        tx.execute(
            "INSERT INTO demo_meta(schema_version, events, users, products, seed)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                SCHEMA_VERSION,
                rows as i64,
                USERS as i64,
                PRODUCTS as i64,
                SEED as i64
            ],
        )?;
        tx.commit()?;
        conn.execute_batch("PRAGMA synchronous=FULL; ANALYZE;")?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        conn.close().map_err(|(_, e)| e)?;
        Ok(())
    })();
    if let Err(e) = result {
        remove_db_files(&tmp);
        return Err(e);
    }
    remove_db_files(path);
    std::fs::rename(&tmp, path).map_err(|e| {
        remove_db_files(&tmp);
        rusqlite::Error::ToSqlConversionFailure(Box::new(e))
    })?;
    progress(rows, rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rowstream-demo-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn digest(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT id, ts, user_id, product_id, kind, city, amount, big, note FROM events ORDER BY id")
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok(format!(
                    "{:?}",
                    (
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<f64>>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                    )
                ))
            })
            .unwrap();
        rows.map(Result::unwrap).collect()
    }

    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(START_MS), "2025-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn generates_a_complete_deterministic_database() {
        let dir = temp_dir("gen");
        let path = dir.join("demo.db");
        let mut calls = Vec::new();
        generate(&path, 25_000, |done, total| calls.push((done, total))).unwrap();
        assert_eq!(calls.last(), Some(&(25_000, 25_000)));
        assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(is_current(&path, 25_000));
        assert!(!is_current(&path, 25_001));
        assert!(!partial_path(&path).exists(), "no partial file left behind");

        let conn = Connection::open(&path).unwrap();
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(count("SELECT count(*) FROM events"), 25_000);
        assert_eq!(count("SELECT count(*) FROM users"), USERS as i64);
        assert_eq!(count("SELECT count(*) FROM products"), PRODUCTS as i64);
        // Every event joins to a user; ids are 1..=rows in timestamp order.
        assert_eq!(
            count("SELECT count(*) FROM events e JOIN users u ON u.id = e.user_id"),
            25_000
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM events e JOIN events f ON f.id = e.id + 1 WHERE f.ts < e.ts"
            ),
            0
        );
        // The interesting values are all there.
        assert!(count("SELECT count(*) FROM events WHERE big > 9007199254740992") > 1000);
        assert_eq!(
            count("SELECT count(*) FROM events WHERE big = 9223372036854775807"),
            500
        );
        assert_eq!(
            count("SELECT count(*) FROM events WHERE big = -9223372036854775808"),
            500
        );
        assert!(count("SELECT count(*) FROM events WHERE note IS NULL") > 20_000);
        assert!(count("SELECT count(*) FROM events WHERE note IS NOT NULL") > 100);
        assert!(count("SELECT count(*) FROM events WHERE amount IS NULL") > 10_000);
        assert!(count("SELECT count(*) FROM events WHERE city = '東京'") > 100);
        assert!(count("SELECT count(*) FROM events WHERE city = 'São Paulo'") > 100);
        assert!(count("SELECT count(DISTINCT kind) FROM events") >= 8);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);

        // Same seed, same rows: a second run produces the same data.
        let again = dir.join("again.db");
        generate(&again, 25_000, |_, _| {}).unwrap();
        assert_eq!(digest(&path), digest(&again));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_leftover_partial_file_is_never_taken_for_a_database() {
        let dir = temp_dir("partial");
        let path = dir.join("demo.db");
        std::fs::write(partial_path(&path), b"half a database").unwrap();
        assert!(!is_current(&path, 100));
        generate(&path, 100, |_, _| {}).unwrap();
        assert!(is_current(&path, 100));
        assert!(!partial_path(&path).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
