//! Plain-text tables with aligned columns, for `status` and `top`.

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A column: its heading and alignment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Column {
    pub(crate) title: &'static str,
    pub(crate) align: Align,
}

/// Renders a heading line and one line per row, columns two spaces apart, no trailing
/// spaces. Every row has one cell per column.
pub(crate) fn render(columns: &[Column], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            rows.iter()
                .map(|row| row[index].chars().count())
                .chain([column.title.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let titles: Vec<String> = columns
        .iter()
        .map(|column| column.title.to_owned())
        .collect();
    for cells in [titles].iter().chain(rows) {
        let mut line = String::new();
        for ((cell, column), width) in cells.iter().zip(columns).zip(&widths) {
            if !line.is_empty() {
                line.push_str("  ");
            }
            match column.align {
                Align::Left => line.push_str(&format!("{cell:<width$}")),
                Align::Right => line.push_str(&format!("{cell:>width$}")),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_text_left_and_numbers_right() {
        let columns = [
            Column {
                title: "NAME",
                align: Align::Left,
            },
            Column {
                title: "N",
                align: Align::Right,
            },
        ];
        let rows = vec![
            vec!["a".to_owned(), "1000".to_owned()],
            vec!["longer".to_owned(), "2".to_owned()],
        ];
        assert_eq!(
            render(&columns, &rows),
            "NAME       N\na       1000\nlonger     2\n"
        );
    }
}
