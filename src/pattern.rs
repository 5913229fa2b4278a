//! The sparse patterns, their budgets, and per-head layer configurations.
//!
//! The exact semantics of every pattern live here and in [`crate::index`]; backends are
//! held to them by the float64 reference ([`crate::reference`]) and the shared vectors.

use crate::error::{invalid, Error, Result};
use std::fmt;

/// Tile edge of the sparse index: row block `m` covers rows `[64m, 64m + 64)`.
pub const BLOCK: usize = 64;
/// Queries used to estimate vertical and slash scores (the last `min(LAST_Q, N)` rows).
pub const LAST_Q: usize = 64;
/// Columns `j < FORCED_COLUMNS` always score `+inf` (attention sinks).
pub const FORCED_COLUMNS: usize = 30;
/// Diagonal offsets `o < FORCED_OFFSETS` always score `+inf` (the local window).
pub const FORCED_OFFSETS: usize = 100;
/// Smallest vertical budget: `nv = min(N, max(vertical, MIN_VERTICAL))`.
pub const MIN_VERTICAL: usize = 30;
/// Smallest slash budget: `ns = min(N, max(slash, MIN_SLASH))`.
pub const MIN_SLASH: usize = 50;

/// One head's attention pattern.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Key `j` visible to query `i` iff `j <= i`.
    Dense,
    /// A-shape (StreamingLLM): `j <= i && (j < sink || i - j < local)`, token-exact.
    AShape {
        /// Leading sink tokens every query sees.
        sink: usize,
        /// Local window: query `i` sees keys `i - local < j <= i`. At least 1.
        local: usize,
    },
    /// Vertical-Slash: the best `vertical` key columns and `slash` diagonals, estimated
    /// online from the last 64 queries (see [`crate::index`]).
    VerticalSlash {
        /// Column budget (raised to at least 30, capped at N).
        vertical: usize,
        /// Diagonal budget (raised to at least 50, capped at N).
        slash: usize,
    },
    /// Block-Sparse: per 64-row block, its diagonal block plus the `top_k - 1` best
    /// earlier 64-key blocks by mean-pooled `q . k`.
    BlockSparse {
        /// Blocks kept per row block, the diagonal included. At least 1.
        top_k: usize,
    },
}

impl Pattern {
    /// Check the pattern's parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Pattern::AShape { local: 0, .. } => Err(invalid(
                "a-shape local",
                "must be at least 1 (a query always sees itself), got 0",
            )),
            Pattern::BlockSparse { top_k: 0 } => Err(invalid(
                "block-sparse top_k",
                "must be at least 1 (the diagonal block is always kept), got 0",
            )),
            _ => Ok(()),
        }
    }

    /// True for the patterns served by the shared sparse index (vertical-slash, block-sparse).
    pub fn uses_index(&self) -> bool {
        matches!(
            self,
            Pattern::VerticalSlash { .. } | Pattern::BlockSparse { .. }
        )
    }

    /// The pattern's family name (`dense`, `a-shape`, `vertical-slash`, `block-sparse`).
    pub fn family(&self) -> &'static str {
        match self {
            Pattern::Dense => "dense",
            Pattern::AShape { .. } => "a-shape",
            Pattern::VerticalSlash { .. } => "vertical-slash",
            Pattern::BlockSparse { .. } => "block-sparse",
        }
    }

    /// Effective vertical and slash budgets `(nv, ns)` at sequence length `n`.
    pub fn vertical_slash_budgets(vertical: usize, slash: usize, n: usize) -> (usize, usize) {
        (
            n.min(vertical.max(MIN_VERTICAL)),
            n.min(slash.max(MIN_SLASH)),
        )
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Dense => write!(f, "dense"),
            Pattern::AShape { sink, local } => write!(f, "a-shape:{sink},{local}"),
            Pattern::VerticalSlash { vertical, slash } => {
                write!(f, "vertical-slash:{vertical},{slash}")
            }
            Pattern::BlockSparse { top_k } => write!(f, "block-sparse:{top_k}"),
        }
    }
}

impl std::str::FromStr for Pattern {
    type Err = Error;
    /// Parse `dense`, `a-shape:SINK,LOCAL`, `vertical-slash:V,S` or `block-sparse:K`.
    fn from_str(spec: &str) -> Result<Self> {
        let bad = |msg: String| invalid("--pattern", msg);
        let (name, args) = match spec.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a)),
            None => (spec.trim(), None),
        };
        let nums = |want: usize| -> Result<Vec<usize>> {
            let a = args.ok_or_else(|| {
                bad(format!(
                    "`{spec}`: `{name}` takes {want} number(s) after a colon"
                ))
            })?;
            let v = a
                .split(',')
                .map(|x| x.trim().parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("`{spec}`: {e}")))?;
            if v.len() != want {
                return Err(bad(format!(
                    "`{spec}`: `{name}` takes {want} number(s), got {}",
                    v.len()
                )));
            }
            Ok(v)
        };
        let p = match name {
            "dense" if args.is_none() => Pattern::Dense,
            "a-shape" => {
                let v = nums(2)?;
                Pattern::AShape {
                    sink: v[0],
                    local: v[1],
                }
            }
            "vertical-slash" => {
                let v = nums(2)?;
                Pattern::VerticalSlash {
                    vertical: v[0],
                    slash: v[1],
                }
            }
            "block-sparse" => Pattern::BlockSparse { top_k: nums(1)?[0] },
            _ => {
                return Err(bad(format!(
                    "unknown pattern `{spec}`: want dense, a-shape:SINK,LOCAL, \
                     vertical-slash:V,S or block-sparse:K"
                )))
            }
        };
        p.validate()?;
        Ok(p)
    }
}

/// MInference's default for a head its config does not list: vertical-slash 1000/6096.
pub const DEFAULT_HEAD: Pattern = Pattern::VerticalSlash {
    vertical: 1000,
    slash: 6096,
};

/// The pattern of every query head of one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerConfig {
    /// One pattern per query head, `Hq` of them.
    pub heads: Vec<Pattern>,
}

impl LayerConfig {
    /// Every head with the same pattern.
    pub fn uniform(pattern: Pattern, q_heads: usize) -> Self {
        Self {
            heads: vec![pattern; q_heads],
        }
    }

    /// Check every head and the head count against `q_heads`.
    pub fn validate(&self, q_heads: usize) -> Result<()> {
        if self.heads.len() != q_heads {
            return Err(invalid(
                "config",
                format!(
                    "has {} head patterns but q has {q_heads} heads",
                    self.heads.len()
                ),
            ));
        }
        self.heads.iter().try_for_each(Pattern::validate)
    }

    /// Read layer `layer` of a MInference per-head config (JSON).
    ///
    /// The format is a list with one object per layer, `{"HEAD": [TYPE, VERTICAL, SLASH,
    /// SCORE]}`, TYPE one of `vertical_and_slash`, `stream_llm` (A-shape with sink =
    /// VERTICAL, local = SLASH) and `block_sparse` (top-k = VERTICAL; MInference's own
    /// forward ignores the sizes there and uses 100). A head that is missing gets
    /// [`DEFAULT_HEAD`], as in MInference.
    pub fn from_minference_json(
        text: &str,
        layer: usize,
        q_heads: usize,
        path: &str,
    ) -> Result<Self> {
        let err = |msg: String| Error::Config {
            path: path.to_string(),
            msg,
        };
        let root: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?;
        let layers = root
            .as_array()
            .ok_or_else(|| err("want a JSON list with one object per layer".into()))?;
        let obj = layers
            .get(layer)
            .ok_or_else(|| {
                err(format!(
                    "layer {layer} requested, the config has {}",
                    layers.len()
                ))
            })?
            .as_object()
            .ok_or_else(|| err(format!("layer {layer} is not an object of heads")))?;
        let mut heads = vec![DEFAULT_HEAD; q_heads];
        for (key, val) in obj {
            let h: usize = key
                .parse()
                .map_err(|_| err(format!("layer {layer}: head key `{key}` is not a number")))?;
            if h >= q_heads {
                return Err(err(format!(
                    "layer {layer}: head {h} listed, but q has {q_heads} heads"
                )));
            }
            let arr = val.as_array().ok_or_else(|| {
                err(format!(
                    "layer {layer} head {h}: want [type, vertical, slash, score]"
                ))
            })?;
            let ty = arr.first().and_then(|x| x.as_str()).ok_or_else(|| {
                err(format!(
                    "layer {layer} head {h}: first entry must be the type string"
                ))
            })?;
            let num = |i: usize| -> Result<usize> {
                arr.get(i)
                    .and_then(|x| x.as_u64().or_else(|| x.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64)))
                    .map(|x| x as usize)
                    .ok_or_else(|| {
                        err(format!(
                            "layer {layer} head {h}: entry {i} must be a non-negative integer, got {:?}",
                            arr.get(i)
                        ))
                    })
            };
            let p = match ty {
                "vertical_and_slash" => Pattern::VerticalSlash {
                    vertical: num(1)?,
                    slash: num(2)?,
                },
                "stream_llm" => Pattern::AShape {
                    sink: num(1)?,
                    local: num(2)?,
                },
                "block_sparse" => Pattern::BlockSparse { top_k: num(1)? },
                "dense" => Pattern::Dense,
                other => {
                    return Err(err(format!(
                        "layer {layer} head {h}: unknown type `{other}` (want vertical_and_slash, \
                         stream_llm, block_sparse)"
                    )))
                }
            };
            p.validate()
                .map_err(|e| err(format!("layer {layer} head {h}: {e}")))?;
            heads[h] = p;
        }
        Ok(Self { heads })
    }

    /// Write this layer as one entry of a MInference config (`{"HEAD": [TYPE, V, S, SCORE]}`).
    pub fn to_minference_json(&self, scores: Option<&[f64]>) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        for (h, p) in self.heads.iter().enumerate() {
            let score = scores.and_then(|s| s.get(h)).copied().unwrap_or(0.0);
            let entry = match *p {
                Pattern::VerticalSlash { vertical, slash } => {
                    serde_json::json!(["vertical_and_slash", vertical, slash, score])
                }
                Pattern::AShape { sink, local } => {
                    serde_json::json!(["stream_llm", sink, local, score])
                }
                Pattern::BlockSparse { top_k } => {
                    serde_json::json!(["block_sparse", top_k, 0, score])
                }
                Pattern::Dense => serde_json::json!(["dense", 0, 0, score]),
            };
            obj.insert(h.to_string(), entry);
        }
        serde_json::Value::Object(obj)
    }
}
