use cedar_policy::*;
use miette::Diagnostic;
use std::str::FromStr;
fn show(label: &str, d: &dyn Diagnostic) {
    println!("{label}: {d}");
    if let Some(l) = d.labels() { for x in l { println!("  label {:?} off={} len={}", x.label(), x.offset(), x.len()); } }
    if let Some(h) = d.help() { println!("  help {h}"); }
    if let Some(r) = d.related() { for x in r { show("   related", x); } }
}
fn main() {
    let schema_src = r#"
entity Group;
entity Principal in [Group] { name: String, kind: String };
entity Target { name: String, kind: String, environment: String, tags: Set<String> };
type Ctx = { ttl_s: Long, reason: String, binding: { kind: String, ref: String }, break_glass: Bool,
  time: { hour: Long, minute: Long, weekday: String } };
action "request", "approve", "end", "break_glass", "read_evidence", "admin" appliesTo {
  principal: [Principal], resource: [Target], context: Ctx };
"#;
    let (schema, warns) = Schema::from_cedarschema_str(schema_src).unwrap();
    for w in warns { println!("schema warning {w}"); }
    let bad = "permit(principal, action, resource);\n\npermit(\n    principl, action, resource);\nforbid(principal, actio, resource) when { context.x };";
    match PolicySet::from_str(bad) { Err(e) => { for x in e.iter() { show("parse", x); } } Ok(_) => println!("ok?") }
    let src = "@id(\"a\") permit(principal, action == Action::\"request\", resource) when { context.ttl_s <= 10 && principal.nope == \"x\" };\n@approvals(\"2\")\npermit(principal == Target::\"x\", action, resource);\npermit(principal == User::\"x\", action, resource) when { context.nope };\npermit(principal, action, resource) when { context.binding.ref == \"x\" && [\"Tue\"].contains(context.time.weekday) };";
    let ps = PolicySet::from_str(src).unwrap();
    for p in ps.policies() { println!("{} text={:?} ann={:?}", p.id(), p.to_cedar(), p.annotations().collect::<Vec<_>>()); println!("{}", p.to_json().unwrap()); }
    let v = Validator::new(schema.clone());
    let r = v.validate(&ps, ValidationMode::Strict);
    for e in r.validation_errors() { show("verr", e); }
    for e in r.validation_warnings() { show("vwarn", e); }
    let ps2 = PolicySet::from_policies(ps.policies().map(|p| p.new_id(PolicyId::new(format!("x-{}", p.id()))))).unwrap();
    let r = v.validate(&ps2, ValidationMode::Strict);
    for e in r.validation_errors() { show("verr2", e); }
}
