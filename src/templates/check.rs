//! `--check-templates`: every template id of the manifests against the API's lists, reported
//! like any other validation problem (file, job or CSV line, field), all at once.
//!
//! **Names are not resolved.** A manifest could be allowed to name a template by its English name
//! when that name is unique, but a name is not what the API takes, is not promised to stay
//! unique, and a list read a day ago may have gained a second template of that name: the request
//! that is paid for must carry exactly the id the user wrote. So a name is a problem like any
//! other unknown id, and its message gives the id to write: "did you mean …". The same hint
//! names an id that differs only in case, or by one or two characters, or that belongs to the
//! other list (a scene id given as the human one).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{List, Which};
use crate::body::Body;
use crate::manifest::Manifest;
use crate::problem::{At, Problem};

/// Both lists.
#[derive(Debug, Clone)]
pub(crate) struct Lists {
    pub human: List,
    pub scene: List,
}

impl Lists {
    pub(crate) fn get(&self, which: Which) -> &List {
        match which {
            Which::Human => &self.human,
            Which::Scene => &self.scene,
        }
    }
}

/// Where a template id is written: file, place, field name as the manifest spells it.
type Place = (PathBuf, At, &'static str);

/// The template ids of the manifests, each with the places it is written at (a place that
/// repeats on every row of a job is kept once, without its row).
#[derive(Debug, Default)]
pub(crate) struct Refs {
    ids: BTreeMap<(Which, String), Vec<Place>>,
}

/// The most places kept per id (the problems are listed up to `validate::MAX_LISTED` anyway).
const PLACES_PER_ID: usize = 10;

impl Refs {
    /// Every template id of every request (one pass over the expansion; requests that do not
    /// expand were reported by validation already).
    pub(crate) fn of(manifests: &[Manifest], run_id: Option<&str>) -> Refs {
        let mut refs = Refs::default();
        for request in crate::expand::expand(manifests, run_id).flatten() {
            let Body::Model(body) = &request.body else {
                continue;
            };
            let Some(t) = &body.template else {
                continue;
            };
            for (which, id) in [
                (Which::Human, &t.human_template_id),
                (Which::Scene, &t.scene_template_id),
            ] {
                if id.trim().is_empty() {
                    continue;
                }
                let field = request.origin.field_name(super::field(which));
                let place =
                    Problem::new(&request.job.file, request.at(), Some(field), "").without_row();
                let places = refs.ids.entry((which, id.clone())).or_default();
                let place = (place.file, place.at, field);
                if places.len() < PLACES_PER_ID && !places.contains(&place) {
                    places.push(place);
                }
            }
        }
        refs
    }

    /// No template id at all: nothing to check, no list to read.
    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// How many distinct ids of each list.
    pub(crate) fn count(&self, which: Which) -> usize {
        self.ids.keys().filter(|(w, _)| *w == which).count()
    }

    /// The ids not in the lists, as problems (with a hint when one fits).
    pub(crate) fn unknown(&self, lists: &Lists) -> Vec<Problem> {
        let mut out = Vec::new();
        for ((which, id), places) in &self.ids {
            let list = lists.get(*which);
            if list.find(id).is_some() {
                continue;
            }
            let other = lists.get(match which {
                Which::Human => Which::Scene,
                Which::Scene => Which::Human,
            });
            let message = message(id, list, other);
            for (file, at, field) in places {
                out.push(Problem::new(file, at.clone(), Some(field), message.clone()));
            }
        }
        out
    }
}

/// Why `id` is not a template of `list`, and what was probably meant.
pub(crate) fn message(id: &str, list: &List, other: &List) -> String {
    let which = list.which;
    let shown = crate::logging::safe(id);
    let mut m = if list.templates.is_empty() {
        format!("`{shown}` is not a {which} template id: the API lists no {which} templates")
    } else {
        format!(
            "`{shown}` is not a {which} template id (the API lists {} {which} templates)",
            list.templates.len()
        )
    };
    match hint(id, list, other) {
        Some(h) => {
            m += "; ";
            m += &h;
        }
        None => m += &format!("; see `hidream-batch templates {which}`"),
    }
    m
}

/// The "did you mean" of an unknown id, if one fits.
fn hint(id: &str, list: &List, other: &List) -> Option<String> {
    let want = id.trim();
    let quote = |ids: &[&str]| {
        ids.iter()
            .map(|i| format!("`{}`", crate::logging::safe(i)))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    // A name: never resolved, but the id is given.
    let named: Vec<&str> = list
        .templates
        .iter()
        .filter(|t| {
            t.name_en
                .as_deref()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case(want))
                || t.name_zh.as_deref().is_some_and(|n| n.trim() == want)
        })
        .map(|t| t.id.as_str())
        .collect();
    if !named.is_empty() {
        return Some(format!(
            "did you mean {}? `{}` is the name of {}, not an id: a request carries the id as written (names are not resolved)",
            quote(&named),
            crate::logging::safe(want),
            if named.len() == 1 {
                "that template".to_string()
            } else {
                format!("{} templates", named.len())
            }
        ));
    }
    // The same id but for case, or for look-alike characters (`O` for `0`, `l` for `1`).
    let alike: Vec<&str> = list
        .templates
        .iter()
        .filter(|t| looks(&t.id) == looks(want))
        .map(|t| t.id.as_str())
        .collect();
    if !alike.is_empty() {
        return Some(format!("did you mean {}?", quote(&alike)));
    }
    if other.find(want).is_some() {
        return Some(format!(
            "it is a {} template id: did you swap `human_template_id` and `scene_template_id`?",
            other.which
        ));
    }
    // Near misses: one or two characters off (a shorter id must be closer).
    let n = want.chars().count();
    if n == 0 || n > 100 {
        return None;
    }
    let most = if n <= 4 { 1 } else { 2 };
    let mut best: Vec<(usize, &str)> = list
        .templates
        .iter()
        .filter_map(|t| {
            let d = distance(want, &t.id, most)?;
            Some((d, t.id.as_str()))
        })
        .collect();
    let least = best.iter().map(|(d, _)| *d).min()?;
    best.retain(|(d, _)| *d == least);
    let ids: Vec<&str> = best.iter().take(3).map(|(_, i)| *i).collect();
    Some(format!("did you mean {}?", quote(&ids)))
}

/// An id as it looks: lower case, `o` as `0`, `l` and `i` as `1`.
fn looks(id: &str) -> String {
    id.trim()
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            'o' => '0',
            'l' | 'i' => '1',
            c => c,
        })
        .collect()
}

/// The edit distance of `a` and `b` (insertions, deletions, substitutions of characters), if it
/// is at most `most`.
fn distance(a: &str, b: &str, most: usize) -> Option<usize> {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > most || b.len() > 200 {
        return None;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    let d = prev[b.len()];
    (d <= most).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::Template;
    use serde_json::json;

    fn list(which: Which, entries: &[(&str, &str)]) -> List {
        List {
            which,
            templates: entries
                .iter()
                .map(|(id, name)| Template::from_value(json!({"id": id, "name_en": name})).unwrap())
                .collect(),
        }
    }

    #[test]
    fn unknown_ids_get_a_hint_when_one_fits() {
        let human = list(
            Which::Human,
            &[
                ("h-101", "Ava"),
                ("h-102", "Mia"),
                ("h-201", "Leo"),
                ("h-202", "Leo"),
            ],
        );
        let scene = list(Which::Scene, &[("s-street", "Street")]);
        let m = message("Mia", &human, &scene);
        assert!(
            m.contains("did you mean `h-102`?") && m.contains("not resolved"),
            "{m}"
        );
        let m = message("leo", &human, &scene);
        assert!(
            m.contains("`h-201` or `h-202`") && m.contains("2 templates"),
            "{m}"
        );
        assert!(message("H-101", &human, &scene).contains("did you mean `h-101`?"));
        assert!(message("h-1O2", &human, &scene).contains("did you mean `h-102`?"));
        assert!(message("h-1011", &human, &scene).contains("did you mean `h-101`?"));
        assert!(message("s-street", &human, &scene).contains("it is a scene template id"));
        let m = message("zzz-999", &human, &scene);
        assert!(m.contains("see `hidream-batch templates human`"), "{m}");
        assert!(m.contains("(the API lists 4 human templates)"), "{m}");
        let empty = list(Which::Human, &[]);
        assert!(message("h-1", &empty, &scene).contains("lists no human templates"));
    }

    #[test]
    fn the_distance_is_bounded() {
        assert_eq!(distance("h-101", "h-101", 2), Some(0));
        assert_eq!(distance("h-110", "h-101", 2), Some(2));
        assert_eq!(distance("h-1", "h-101", 1), None);
        assert_eq!(distance("abc", "xyz", 2), None);
    }
}
