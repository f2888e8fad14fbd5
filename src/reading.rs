//! A reading: one poll of one meter's point group, and its encodings for the sinks.

use std::{sync::Arc, time::SystemTime};

/// One meter, one poll. `ts` is the sampling time (when the request went out), kept as is
/// when the reading is delivered late.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub meter: Arc<str>,
    pub bus: Arc<str>,
    pub profile: Arc<str>,
    pub ts: SystemTime,
    /// Per meter, +1 per reading; assigned when the reading enters the log.
    pub seq: u64,
    pub values: Values,
    /// Read on demand (a remote `read`), not on the meter's schedule.
    pub on_demand: bool,
}

/// A reading's values: its quantity names, shared with every reading of the same shape (a
/// point group of a profile), and a number per name. 8 bytes a value where a `(name, value)`
/// pair took 24, and no reference count touched per value when a reading is made or dropped.
#[derive(Clone, PartialEq, Default)]
pub struct Values {
    names: Arc<[Arc<str>]>,
    nums: Box<[f64]>,
}

impl Values {
    /// `nums[i]` is the value of `names[i]`; the shorter of the two decides how many there are.
    pub fn new(names: Arc<[Arc<str>]>, nums: impl Into<Box<[f64]>>) -> Values {
        let mut nums: Box<[f64]> = nums.into();
        if nums.len() > names.len() {
            nums = nums[..names.len()].into();
        }
        let names = if names.len() > nums.len() {
            names[..nums.len()].iter().cloned().collect()
        } else {
            names
        };
        Values { names, nums }
    }

    /// `pairs` as values, with the names of `known` when one of them is the same list (the
    /// same names, compared by pointer first): a bus task keeps the lists it made, so its
    /// readings share them. A new list is added to `known`, up to [`KNOWN_LISTS`].
    pub fn shared(pairs: Vec<(Arc<str>, f64)>, known: &mut Vec<Arc<[Arc<str>]>>) -> Values {
        let names = match known
            .iter()
            .find(|l| same_names(l, pairs.iter().map(|(q, _)| q)))
        {
            Some(l) => l.clone(),
            None => {
                let l: Arc<[Arc<str>]> = pairs.iter().map(|(q, _)| q.clone()).collect();
                if known.len() < KNOWN_LISTS {
                    known.push(l.clone());
                }
                l
            }
        };
        Values {
            names,
            nums: pairs.into_iter().map(|(_, v)| v).collect(),
        }
    }

    pub fn names(&self) -> &Arc<[Arc<str>]> {
        &self.names
    }

    pub fn nums(&self) -> &[f64] {
        &self.nums
    }

    pub fn len(&self) -> usize {
        self.nums.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nums.is_empty()
    }

    /// `(name, value)` in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Arc<str>, f64)> + Clone + '_ {
        self.names.iter().zip(self.nums.iter().copied())
    }

    /// The value of `q`, the first if it occurs twice.
    pub fn get(&self, q: &str) -> Option<f64> {
        self.iter().find(|(n, _)| &***n == q).map(|(_, v)| v)
    }

    /// Bytes on the heap that belong to these values alone (the names are shared).
    pub fn heap_bytes(&self) -> usize {
        self.nums.len() * std::mem::size_of::<f64>()
    }
}

/// Whether two quantity names are the same; the same `Arc` compares without reading the text.
pub fn same_name(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// Whether `a` and `b` name the same quantities in the same order.
pub fn same_names<'a>(a: &[Arc<str>], b: impl ExactSizeIterator<Item = &'a Arc<str>>) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_name(x, y))
}

/// Lists of names a bus task keeps to share among its readings: one per point group of each
/// profile on the bus is typical; beyond this, readings get their own list.
pub const KNOWN_LISTS: usize = 64;

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<(Arc<str>, f64)> for Values {
    fn from_iter<I: IntoIterator<Item = (Arc<str>, f64)>>(iter: I) -> Values {
        let (names, nums): (Vec<Arc<str>>, Vec<f64>) = iter.into_iter().unzip();
        Values {
            names: names.into(),
            nums: nums.into(),
        }
    }
}

impl From<Vec<(Arc<str>, f64)>> for Values {
    fn from(pairs: Vec<(Arc<str>, f64)>) -> Values {
        pairs.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Values {
    type Item = (&'a Arc<str>, f64);
    type IntoIter = std::iter::Zip<
        std::slice::Iter<'a, Arc<str>>,
        std::iter::Copied<std::slice::Iter<'a, f64>>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.names.iter().zip(self.nums.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(qs: &[&str]) -> Vec<Arc<str>> {
        qs.iter().map(|q| Arc::from(*q)).collect()
    }

    #[test]
    fn readings_of_the_same_names_share_one_list_and_others_get_their_own() {
        let group = names(&["voltage_l1_v", "current_l1_a"]);
        let pairs = |vs: &[f64]| group.iter().cloned().zip(vs.iter().copied()).collect();
        let mut known = Vec::new();
        let a = Values::shared(pairs(&[230.0, 5.0]), &mut known);
        let b = Values::shared(pairs(&[231.0, 6.0]), &mut known);
        assert!(Arc::ptr_eq(a.names(), b.names()), "the same list");
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            [(&group[0], 231.0), (&group[1], 6.0)]
        );
        // Equal names in other strings (a reload) still find the list; a part of it does not.
        let again = Values::shared(
            names(&["voltage_l1_v", "current_l1_a"])
                .into_iter()
                .zip([1.0, 2.0])
                .collect(),
            &mut known,
        );
        assert!(Arc::ptr_eq(a.names(), again.names()));
        let part = Values::shared(vec![(group[0].clone(), 229.0)], &mut known);
        assert_eq!(part.len(), 1);
        assert_eq!(known.len(), 2);
        assert_eq!(part.get("voltage_l1_v"), Some(229.0));
        assert_eq!(part.get("current_l1_a"), None);
    }

    #[test]
    fn the_names_kept_for_sharing_are_bounded() {
        let mut known = Vec::new();
        for i in 0..KNOWN_LISTS + 10 {
            let v = Values::shared(vec![(Arc::from(format!("q{i}")), 1.0)], &mut known);
            assert_eq!(v.len(), 1);
        }
        assert_eq!(known.len(), KNOWN_LISTS);
    }

    #[test]
    fn values_pair_names_and_numbers_up_to_the_shorter_of_the_two() {
        let list: Arc<[Arc<str>]> = names(&["a", "b", "c"]).into();
        for (nums, want) in [
            (
                vec![1.0, 2.0, 3.0],
                vec![("a", 1.0), ("b", 2.0), ("c", 3.0)],
            ),
            (vec![1.0], vec![("a", 1.0)]),
            (
                vec![1.0, 2.0, 3.0, 4.0],
                vec![("a", 1.0), ("b", 2.0), ("c", 3.0)],
            ),
            (vec![], vec![]),
        ] {
            let v = Values::new(list.clone(), nums.clone());
            let got: Vec<(&str, f64)> = v.iter().map(|(q, v)| (&**q, v)).collect();
            assert_eq!(got, want, "{nums:?}");
            assert_eq!(v.names().len(), v.nums().len());
        }
    }
}
