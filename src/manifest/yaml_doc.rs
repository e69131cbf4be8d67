//! The serde model of a YAML manifest: strict (an unknown key anywhere is an error), every field
//! kept as text (a template) until a request is rendered and typed.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Field;
use crate::api::Kind;
use crate::limits::YAML_JOBS;

/// A YAML scalar (string, number or boolean) kept as text: every field is a template until a
/// request is rendered and typed. A list or map where a scalar belongs is a type error.
#[derive(Debug, Clone)]
pub(super) struct Scalar(pub(super) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A mapping whose order as written matters (the matrix: the last key varies fastest).
#[derive(Debug, Clone, Default)]
pub(super) struct Ordered<T>(pub(super) Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<T>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<Scalar, T>()? {
                    out.push((k.0, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A list of scalars (a matrix variable's values).
#[derive(Debug, Clone)]
pub(super) struct Values(pub(super) Vec<Scalar>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Values;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Values, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<Scalar>()? {
                    out.push(v);
                }
                Ok(Values(out))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDoc {
    pub(super) name: Option<Scalar>,
    #[serde(default)]
    pub(super) defaults: DefaultsDoc,
    #[serde(deserialize_with = "at_most_jobs")]
    pub(super) jobs: Vec<JobDoc>,
}

/// The `jobs` list, refused past [`YAML_JOBS`] before the next job is built.
pub(super) fn at_most_jobs<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of jobs")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(job) = seq.next_element()? {
                if out.len() == YAML_JOBS {
                    return Err(de::Error::custom(format!(
                        "the manifest has more than {YAML_JOBS} jobs (README \"Limits\"); sweep with a matrix, a `for_each` table or a CSV manifest"
                    )));
                }
                out.push(job);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V(std::marker::PhantomData))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DefaultsDoc {
    pub(super) txt2img: Option<FieldsDoc>,
    pub(super) model: Option<FieldsDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TemplateDoc {
    pub(super) human_template_id: Option<Scalar>,
    pub(super) scene_template_id: Option<Scalar>,
    pub(super) custom_human_template: Option<Scalar>,
}

/// The API fields, as `defaults` and jobs write them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FieldsDoc {
    pub(super) prompt: Option<Scalar>,
    pub(super) negative_prompt: Option<Scalar>,
    pub(super) img_count: Option<Scalar>,
    pub(super) version: Option<Scalar>,
    pub(super) resolution: Option<Scalar>,
    pub(super) notify_url: Option<Scalar>,
    pub(super) image: Option<Scalar>,
    pub(super) mask: Option<Scalar>,
    pub(super) image_count: Option<Scalar>,
    pub(super) template: Option<TemplateDoc>,
}

/// A job: its own keys and the API fields (serde cannot combine `flatten` with
/// `deny_unknown_fields`, so the fields are listed again here).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JobDoc {
    pub(super) id: Option<Scalar>,
    pub(super) kind: Option<Scalar>,
    pub(super) matrix: Option<Ordered<Values>>,
    pub(super) for_each: Option<Scalar>,
    pub(super) repeat: Option<Scalar>,
    pub(super) meta: Option<Ordered<Scalar>>,
    pub(super) prompt: Option<Scalar>,
    pub(super) negative_prompt: Option<Scalar>,
    pub(super) img_count: Option<Scalar>,
    pub(super) version: Option<Scalar>,
    pub(super) resolution: Option<Scalar>,
    pub(super) notify_url: Option<Scalar>,
    pub(super) image: Option<Scalar>,
    pub(super) mask: Option<Scalar>,
    pub(super) image_count: Option<Scalar>,
    pub(super) template: Option<TemplateDoc>,
}

impl JobDoc {
    pub(super) fn fields(&self) -> FieldsDoc {
        FieldsDoc {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            img_count: self.img_count.clone(),
            version: self.version.clone(),
            resolution: self.resolution.clone(),
            notify_url: self.notify_url.clone(),
            image: self.image.clone(),
            mask: self.mask.clone(),
            image_count: self.image_count.clone(),
            template: self.template.clone(),
        }
    }
}

impl FieldsDoc {
    /// The fields that are set, with their values.
    pub(super) fn entries(&self) -> Vec<(Field, &str)> {
        fn push<'a>(out: &mut Vec<(Field, &'a str)>, f: Field, v: &'a Option<Scalar>) {
            if let Some(v) = v {
                out.push((f, v.0.as_str()));
            }
        }
        let mut out = Vec::new();
        push(&mut out, Field::Prompt, &self.prompt);
        push(&mut out, Field::NegativePrompt, &self.negative_prompt);
        push(&mut out, Field::ImgCount, &self.img_count);
        push(&mut out, Field::Version, &self.version);
        push(&mut out, Field::Resolution, &self.resolution);
        push(&mut out, Field::NotifyUrl, &self.notify_url);
        push(&mut out, Field::Image, &self.image);
        push(&mut out, Field::Mask, &self.mask);
        push(&mut out, Field::ImageCount, &self.image_count);
        if let Some(t) = &self.template {
            push(&mut out, Field::HumanTemplateId, &t.human_template_id);
            push(&mut out, Field::SceneTemplateId, &t.scene_template_id);
            push(
                &mut out,
                Field::CustomHumanTemplate,
                &t.custom_human_template,
            );
        }
        out
    }

    /// Apply `defaults` under the job's own fields. A job that chooses its model mode (`template`
    /// or `prompt`) takes neither mode from the defaults, so a default template never collides
    /// with a job's prompt; a `template` is taken as a whole, never merged key by key.
    pub(super) fn with_defaults(mut self, defaults: Option<&FieldsDoc>, kind: Kind) -> FieldsDoc {
        let Some(d) = defaults else { return self };
        let own_mode = kind == Kind::Model && (self.template.is_some() || self.prompt.is_some());
        macro_rules! fill {
            ($($f:ident),*) => {$( if self.$f.is_none() { self.$f = d.$f.clone(); } )*};
        }
        fill!(
            negative_prompt,
            img_count,
            version,
            resolution,
            notify_url,
            image,
            mask,
            image_count
        );
        if !own_mode {
            fill!(prompt, template);
        }
        self
    }
}
