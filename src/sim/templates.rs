//! The template lists the simulator serves, fixed so tests and rehearsals can name them: 48 model
//! types (`h-101`…`h-124` women, `h-201`…`h-224` men) and 30 scenes (`s-street`, `s-park`, …,
//! `s-studio`, …), with the documented fields (`id`, `name_en`, `name_zh`, `gender` or
//! `scenes_type` and `region`, `show_image`) and one the documentation does not name
//! (`age_range` for humans, `sort` for both), as a real list may have. At the API's default page
//! size (20) each list is several pages.
//!
//! A cover (`show_image`) is served at `/sim/templates/<id>.png`, generated (a figure or a
//! scene, `image::cover`) at `?width=N` (16–1024; default 768), a third taller than wide.

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::image::Cover;

/// `(id, name_en, name_zh)` of the women, the men.
const WOMEN: [(&str, &str); 24] = [
    ("Ava", "艾娃"),
    ("Mia", "米娅"),
    ("Lena", "莉娜"),
    ("Yuki", "由纪"),
    ("Amara", "阿玛拉"),
    ("Sofia", "索菲亚"),
    ("Chloe", "克洛伊"),
    ("Nora", "诺拉"),
    ("Hana", "花"),
    ("Zara", "扎拉"),
    ("Ines", "伊内丝"),
    ("Priya", "普丽娅"),
    ("Lucia", "露西亚"),
    ("Emma", "艾玛"),
    ("Mei", "美"),
    ("Aisha", "艾莎"),
    ("Freya", "弗蕾娅"),
    ("Olivia", "奥利维亚"),
    ("Sakura", "樱"),
    ("Elena", "埃琳娜"),
    ("Jia", "佳"),
    ("Maya", "玛雅"),
    ("Leila", "蕾拉"),
    ("Grace", "格蕾丝"),
];
const MEN: [(&str, &str); 24] = [
    ("Leo", "里奥"),
    ("Kai", "凯"),
    ("Noah", "诺亚"),
    ("Hiro", "博"),
    ("Omar", "奥马尔"),
    ("Lucas", "卢卡斯"),
    ("Ethan", "伊森"),
    ("Jun", "俊"),
    ("Mateo", "马特奥"),
    ("Arjun", "阿尔琼"),
    ("Felix", "菲利克斯"),
    ("Hugo", "雨果"),
    ("Ren", "莲"),
    ("Samuel", "塞缪尔"),
    ("Wei", "伟"),
    ("Kofi", "科菲"),
    ("Oscar", "奥斯卡"),
    ("Liam", "利亚姆"),
    ("Tao", "涛"),
    ("Diego", "迭戈"),
    ("Yusuf", "优素福"),
    ("Max", "马克斯"),
    ("Chen", "晨"),
    ("Adam", "亚当"),
];
/// `(slug, name_en, name_zh, outdoor, region)` of the scenes.
const SCENES: [(&str, &str, &str, bool, &str); 30] = [
    ("street", "City street", "城市街道", true, "Global 全球"),
    ("park", "Park", "公园", true, "Global 全球"),
    ("beach", "Beach", "海滩", true, "Southeast Asia 东南亚"),
    ("rooftop", "Rooftop", "天台", true, "China 中国"),
    ("garden", "Garden", "花园", true, "Europe 欧洲"),
    ("desert", "Desert", "沙漠", true, "Middle East 中东"),
    ("forest", "Forest", "森林", true, "Europe 欧洲"),
    ("harbor", "Harbor", "港口", true, "Europe 欧洲"),
    ("old-town", "Old town", "古镇", true, "China 中国"),
    ("snowfield", "Snowfield", "雪地", true, "North America 北美"),
    ("lakeside", "Lakeside", "湖畔", true, "China 中国"),
    ("bridge", "Bridge", "桥上", true, "Japan 日本"),
    ("market", "Market", "集市", true, "Southeast Asia 东南亚"),
    ("campus", "Campus", "校园", true, "North America 北美"),
    ("vineyard", "Vineyard", "葡萄园", true, "Europe 欧洲"),
    ("studio", "Photo studio", "摄影棚", false, "Global 全球"),
    ("cafe", "Cafe", "咖啡馆", false, "Europe 欧洲"),
    ("living-room", "Living room", "客厅", false, "Global 全球"),
    ("office", "Office", "办公室", false, "North America 北美"),
    ("gallery", "Art gallery", "画廊", false, "Europe 欧洲"),
    ("library", "Library", "图书馆", false, "Global 全球"),
    ("boutique", "Boutique", "精品店", false, "Japan 日本"),
    ("loft", "Loft", "阁楼", false, "North America 北美"),
    (
        "hotel-lobby",
        "Hotel lobby",
        "酒店大堂",
        false,
        "China 中国",
    ),
    ("gym", "Gym", "健身房", false, "Global 全球"),
    ("kitchen", "Kitchen", "厨房", false, "Global 全球"),
    ("bookstore", "Bookstore", "书店", false, "Japan 日本"),
    ("bedroom", "Bedroom", "卧室", false, "Global 全球"),
    ("museum", "Museum", "博物馆", false, "Europe 欧洲"),
    ("restaurant", "Restaurant", "餐厅", false, "China 中国"),
];

/// Which list, as the routes name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum List {
    Human,
    Scene,
}

/// One template: its entry without `show_image` (added per request: it points at the host the
/// client reached), and what its cover shows.
struct Entry {
    id: String,
    fields: Value,
    cover: Cover,
}

fn human() -> &'static [Entry] {
    static LIST: OnceLock<Vec<Entry>> = OnceLock::new();
    LIST.get_or_init(|| {
        let women = WOMEN.iter().enumerate().map(|(i, n)| (true, i, n));
        let men = MEN.iter().enumerate().map(|(i, n)| (false, i, n));
        women
            .chain(men)
            .enumerate()
            .map(|(sort, (woman, i, (en, zh)))| {
                let id = format!("h-{}{:02}", if woman { 1 } else { 2 }, i + 1);
                let age = ["18-25", "25-35", "35-45"][i % 3];
                Entry {
                    fields: json!({
                        "id": id, "name_en": en, "name_zh": zh,
                        "gender": if woman { "Woman" } else { "Man" },
                        "age_range": age, "sort": sort + 1,
                    }),
                    id,
                    cover: Cover::Human { woman },
                }
            })
            .collect()
    })
}

fn scene() -> &'static [Entry] {
    static LIST: OnceLock<Vec<Entry>> = OnceLock::new();
    LIST.get_or_init(|| {
        SCENES
            .iter()
            .enumerate()
            .map(|(sort, (slug, en, zh, outdoor, region))| {
                let id = format!("s-{slug}");
                Entry {
                    fields: json!({
                        "id": id, "name_en": en, "name_zh": zh,
                        "scenes_type": if *outdoor { "outdoor scenes" } else { "indoor scenes" },
                        "region": region, "sort": sort + 1,
                    }),
                    id,
                    cover: Cover::Scene { outdoor: *outdoor },
                }
            })
            .collect()
    })
}

fn entries(list: List) -> &'static [Entry] {
    match list {
        List::Human => human(),
        List::Scene => scene(),
    }
}

/// Whether `id` is a template of `list`.
pub(crate) fn has(list: List, id: &str) -> bool {
    entries(list).iter().any(|e| e.id == id)
}

/// How many templates `list` has.
#[cfg(test)]
fn len(list: List) -> usize {
    entries(list).len()
}

/// One page of `list` (`page_index` from 1) as the API's `result`: `templates`, `total_count`,
/// `total_page`; a page past the end is empty. Covers are on `origin`.
pub(crate) fn page(list: List, page_size: usize, page_index: usize, origin: &str) -> Value {
    let all = entries(list);
    let templates: Vec<Value> = all
        .iter()
        .skip(page_size.saturating_mul(page_index - 1))
        .take(page_size)
        .map(|e| {
            let mut v = e.fields.clone();
            v["show_image"] = format!("{origin}/sim/templates/{}.png", e.id).into();
            v
        })
        .collect();
    json!({
        "templates": templates,
        "total_count": all.len(),
        "total_page": all.len().div_ceil(page_size),
    })
}

/// The cover PNG of template `id`, `width` pixels wide (16–1024), or `None` for no such template.
pub(crate) fn cover(id: &str, width: usize) -> Option<Vec<u8>> {
    let entry = human().iter().chain(scene()).find(|e| e.id == id)?;
    let digest = blake3::hash(id.as_bytes());
    let seed = u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"));
    Some(super::image::cover(
        seed,
        entry.cover,
        width.clamp(16, 1024),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_page_as_documented() {
        assert_eq!(len(List::Human), 48);
        assert_eq!(len(List::Scene), 30);
        let p = page(List::Human, 20, 3, "http://h");
        assert_eq!(p["total_page"], 3);
        assert_eq!(p["total_count"], 48);
        assert_eq!(p["templates"].as_array().unwrap().len(), 8);
        assert_eq!(p["templates"][0]["id"], "h-217");
        assert_eq!(
            p["templates"][0]["show_image"],
            "http://h/sim/templates/h-217.png"
        );
        assert!(
            page(List::Scene, 100, 2, "x")["templates"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        assert!(has(List::Human, "h-101") && has(List::Human, "h-205"));
        assert!(has(List::Scene, "s-street") && !has(List::Scene, "h-101"));
        assert!(cover("s-studio", 32).is_some() && cover("nope", 32).is_none());
    }
}
