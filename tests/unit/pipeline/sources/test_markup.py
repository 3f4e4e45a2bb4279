"""pipeline/sources/markup.py: HTML and JATS fragments to plain text, and a JATS body to a structured full text."""

import pytest

from pipeline.sources.markup import jats_text, normalise_doi, plain


def test_plain_keeps_a_bare_less_than_sign_as_text() -> None:
    assert (
        plain("anxiety (at p\u2009<\u2009.001) and depression (p <.01).")
        == "anxiety (at p < .001) and depression (p <.01)."
    )
    assert plain("survival of <1 year.<h4>Conclusions</h4>More work") == "survival of <1 year.\nConclusions\nMore work"
    assert plain("a < b > c, x <= 3 and the end <") == "a < b > c, x <= 3 and the end <"


def test_plain_decodes_entities_exactly_once_and_never_as_markup() -> None:
    assert plain("p &lt; 0.05 and &lt;i&gt;not italic&lt;/i&gt;") == "p < 0.05 and <i>not italic</i>"
    assert plain("&amp;lt; stays &amp;lt; and caf&eacute; &#233;") == "&lt; stays &lt; and café é"


def test_plain_writes_inline_markup_without_spaces() -> None:
    assert plain("H<sub>2</sub>O and E = mc<sup>2</sup>") == "H2O and E = mc2"
    assert (
        plain("<jats:p>CO<jats:sub>2</jats:sub> in <jats:italic>Zea</jats:italic> mays</jats:p>") == "CO2 in Zea mays"
    )
    assert plain("<b>bold</b> <i>it</i>al<em>ic</em>") == "bold italic"


def test_plain_puts_headings_and_paragraphs_on_lines_of_their_own() -> None:
    fragment = "<h4>Results</h4>Cross-sectional data.<h4>Conclusion</h4><p>First.</p><p>Second.</p>"
    assert plain(fragment) == "Results\nCross-sectional data.\nConclusion\nFirst.\nSecond."
    jats = "<jats:title>Abstract</jats:title>\n  <jats:p>Text\n spread   out.</jats:p>"
    assert plain(jats) == "Abstract\nText spread out."
    assert plain("one<br>two<br/><br/>three") == "one\ntwo\nthree"


def test_plain_reads_nested_elements_once() -> None:
    fragment = (
        "<div><p>Outer <span>with <b>nested <i>inline</i></b></span> text</p><ul><li>one</li><li>two</li></ul></div>"
    )
    assert plain(fragment) == "Outer with nested inline text\none\ntwo"


def test_plain_of_nothing_is_empty() -> None:
    assert plain(None) == plain("") == plain("<p> </p>") == ""


def test_normalise_doi_accepts_urls_and_prefixes() -> None:
    assert normalise_doi("https://doi.org/10.1000/ABC") == normalise_doi("doi:10.1000/abc") == "10.1000/abc"
    assert normalise_doi("not a doi") is None


ARTICLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink">
<front><article-meta><abstract><p>Not in the body.</p></abstract></article-meta></front>
<body>
<p>Water (H<sub>2</sub>O) was reused <xref ref-type="bibr" rid="b1">[1]</xref>.</p>
<sec><label>2.</label><title>Methods</title>
  <p>Outer paragraph <p>nested paragraph</p> outer tail.</p>
  <list><list-item><p>first item</p></list-item><list-item><p>second item</p></list-item></list>
  <fig id="f1"><label>Figure 1</label><caption><title>Flow.</title><p>Patients screened.</p></caption></fig>
  <table-wrap id="t1"><label>Table 1</label><caption><p>Cohort</p></caption>
    <table><thead><tr><th>Age</th><th>n</th></tr></thead>
    <tbody><tr><td>&lt;50</td><td>12</td></tr><tr><td>50 or more</td><td>30</td></tr></tbody></table>
  </table-wrap>
  <sec><title>Sampling</title><p>Weekly.</p></sec>
</sec>
<sec><title>Results</title><p>Salts fell by 97%.</p></sec>
</body>
<back><ref-list><ref><mixed-citation>Someone 2001</mixed-citation></ref></ref-list></back>
</article>"""


def test_jats_text_writes_sections_as_paragraphs_with_their_offsets() -> None:
    full = jats_text(ARTICLE)
    assert [s.heading for s in full.sections] == ["2. Methods", "Sampling", "Results"]
    assert all(full.text[s.start :].startswith(s.heading + "\n\n") for s in full.sections)
    assert full.text.startswith("Water (H2O) was reused [1].\n\n2. Methods\n\n")
    assert full.text.endswith("Results\n\nSalts fell by 97%.")
    assert "Not in the body" not in full.text and "Someone 2001" not in full.text
    assert full.pages == [] and full.origin == ""


def test_jats_text_reads_a_nested_paragraph_once() -> None:
    text = jats_text(ARTICLE).text
    assert text.count("nested paragraph") == 1 and text.count("first item") == 1
    assert "Outer paragraph\n\nnested paragraph\n\nouter tail." in text
    assert "first item\n\nsecond item" in text


def test_jats_text_writes_a_table_row_per_line_and_captions_as_paragraphs() -> None:
    text = jats_text(ARTICLE).text
    assert "\n\nTable 1 Cohort\nAge | n\n<50 | 12\n50 or more | 30\n\n" in text
    assert "\n\nFigure 1 Flow. Patients screened.\n\n" in text


def test_jats_text_cuts_at_a_paragraph_boundary_and_drops_later_sections() -> None:
    whole = jats_text(ARTICLE)
    cut = jats_text(ARTICLE, limit=whole.sections[1].start + 3)
    assert whole.text.startswith(cut.text) and whole.text[len(cut.text) :].startswith("\n\n")
    assert cut.sections == whole.sections[:1]
    assert len(jats_text(ARTICLE, limit=10).text) == 10  # a first paragraph too long for the limit is cut


def test_jats_text_without_a_body_is_empty() -> None:
    assert jats_text(b"<article><front/></article>").text == ""


@pytest.mark.parametrize(
    "xml",
    [
        b"<article><body><p>unclosed</body></article>",
        b'<!DOCTYPE a [<!ENTITY e "boom">]><article><body><p>&e;</p></body></article>',
    ],
)
def test_jats_text_refuses_xml_that_is_not_safe_and_well_formed(xml: bytes) -> None:
    with pytest.raises((SyntaxError, ValueError)):
        jats_text(xml)
