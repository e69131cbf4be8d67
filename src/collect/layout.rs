//! How the contact sheet lays a job out (see [`super::html`]): its **axes** are its `var.*`
//! variables, except that variables whose values always go together — the columns of one
//! `for_each` row — form one axis; no axis is a strip, one a labelled row, two a grid, more than
//! two a grid of the two with the most values per combination of the others.

use std::collections::HashMap;

use super::batch::{Batch, Task};

/// One axis of a job: one variable, or several that always go together.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Axis {
    /// Indices into [`Batch::vars`].
    pub vars: Vec<usize>,
    /// Distinct value tuples, in order of first appearance.
    pub values: Vec<Vec<String>>,
}

impl Axis {
    pub(crate) fn key(&self, t: &Task) -> Vec<String> {
        self.vars.iter().map(|&v| t.vars[v].clone()).collect()
    }

    pub(crate) fn name(&self, batch: &Batch) -> String {
        self.vars
            .iter()
            .map(|&v| var_name(&batch.vars[v]))
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

pub(crate) fn meta_name(column: &str) -> &str {
    column.strip_prefix("meta.").unwrap_or(column)
}

fn var_name(column: &str) -> &str {
    column.strip_prefix("var.").unwrap_or(column)
}

pub(crate) fn label(values: &[String]) -> String {
    values.join(" · ")
}

/// How a job is laid out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Layout {
    Strip,
    Row(Axis),
    Grid {
        rows: Axis,
        cols: Axis,
        /// The axes beyond the grid's two; each combination of their values is one group.
        rest: Vec<Axis>,
    },
}

/// Whether each value of `a` goes with exactly one value of `b` and the other way round.
fn together(tasks: &[&Task], a: usize, b: usize) -> bool {
    let mut ab: HashMap<&str, &str> = HashMap::new();
    let mut ba: HashMap<&str, &str> = HashMap::new();
    tasks.iter().all(|t| {
        let (x, y) = (t.vars[a].as_str(), t.vars[b].as_str());
        *ab.entry(x).or_insert(y) == y && *ba.entry(y).or_insert(x) == x
    })
}

/// The layout of one job's tasks (see the module docs).
pub(crate) fn layout(tasks: &[&Task], nvars: usize) -> Layout {
    let used: Vec<usize> = (0..nvars)
        .filter(|&v| tasks.iter().any(|t| !t.vars[v].is_empty()))
        .collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for v in used {
        match groups.iter_mut().find(|g| together(tasks, g[0], v)) {
            Some(g) => g.push(v),
            None => groups.push(vec![v]),
        }
    }
    let mut axes: Vec<Axis> = groups
        .into_iter()
        .map(|vars| {
            let mut axis = Axis {
                vars,
                values: Vec::new(),
            };
            for t in tasks {
                let k = axis.key(t);
                if !axis.values.contains(&k) {
                    axis.values.push(k);
                }
            }
            axis
        })
        .collect();
    match axes.len() {
        0 => Layout::Strip,
        1 => Layout::Row(axes.remove(0)),
        _ => {
            // The two with the most values (stable: ties keep column order), then back in order.
            let mut order: Vec<usize> = (0..axes.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(axes[i].values.len()));
            let (mut a, mut b) = (order[0], order[1]);
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            let rest: Vec<Axis> = axes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != a && *i != b)
                .map(|(_, x)| x.clone())
                .collect();
            Layout::Grid {
                rows: axes[a].clone(),
                cols: axes[b].clone(),
                rest,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Kind;

    fn task(vars: &[&str]) -> Task {
        Task {
            request_id: format!("r-{}", vars.join("-")),
            job: "j".into(),
            kind: Kind::Txt2Img,
            task_id: "t".into(),
            prompt: String::new(),
            image: String::new(),
            templates: Default::default(),
            vars: vars.iter().map(|s| s.to_string()).collect(),
            meta: vec![],
            subs: vec![],
            message: String::new(),
            query_given_up: false,
        }
    }

    #[test]
    fn no_variable_is_a_strip_one_is_a_row_two_a_grid() {
        let ts = [task(&["", ""]), task(&["", ""])];
        let refs: Vec<&Task> = ts.iter().collect();
        assert_eq!(layout(&refs, 2), Layout::Strip);

        let ts = [task(&["a", ""]), task(&["b", ""])];
        let refs: Vec<&Task> = ts.iter().collect();
        assert!(matches!(layout(&refs, 2), Layout::Row(a) if a.values.len() == 2));

        let ts: Vec<Task> = ["x", "y", "z"]
            .iter()
            .flat_map(|s| ["1", "2"].map(|n| task(&[s, n])))
            .collect();
        let refs: Vec<&Task> = ts.iter().collect();
        match layout(&refs, 2) {
            Layout::Grid { rows, cols, rest } => {
                assert_eq!(rows.vars, [0]);
                assert_eq!(rows.values.len(), 3);
                assert_eq!(cols.vars, [1]);
                assert!(rest.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn variables_that_go_together_are_one_axis() {
        // sku and title come from the same for_each row; human is a matrix.
        let ts: Vec<Task> = [("S1", "shirt"), ("S2", "coat")]
            .iter()
            .flat_map(|(s, t)| ["h1", "h2"].map(|h| task(&[s, t, h])))
            .collect();
        let refs: Vec<&Task> = ts.iter().collect();
        match layout(&refs, 3) {
            Layout::Grid { rows, cols, rest } => {
                assert_eq!(rows.vars, [0, 1]);
                assert_eq!(
                    rows.values,
                    [
                        vec!["S1".to_string(), "shirt".into()],
                        vec!["S2".into(), "coat".into()]
                    ]
                );
                assert_eq!(cols.vars, [2]);
                assert!(rest.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn more_than_two_axes_grid_the_two_largest_and_group_the_rest() {
        let mut ts = Vec::new();
        for a in ["a1", "a2"] {
            for b in ["b1", "b2", "b3"] {
                for c in ["c1", "c2", "c3", "c4"] {
                    ts.push(task(&[a, b, c]));
                }
            }
        }
        let refs: Vec<&Task> = ts.iter().collect();
        match layout(&refs, 3) {
            Layout::Grid { rows, cols, rest } => {
                assert_eq!((rows.vars[0], cols.vars[0]), (1, 2));
                assert_eq!(rest.len(), 1);
                assert_eq!(rest[0].vars, [0]);
            }
            other => panic!("{other:?}"),
        }
    }
}
