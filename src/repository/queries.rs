//! The quarantine and the dashboard queries, built with sea-orm's query
//! builder; the same on both engines.

use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::ExposureRepository;
use super::types::{ExposureCounts, ExposureFilter, Page, QuarantineRecord, Totals};
use crate::entity::prelude::*;
use crate::entity::{exposure_current, quarantined_file};
use crate::error::{Error, Result};

impl ExposureRepository {
    /// Records a file that failed to ingest.
    ///
    /// # Errors
    /// The database's error.
    pub async fn quarantine_file(
        &self,
        conn: &impl ConnectionTrait,
        record: QuarantineRecord,
    ) -> Result<quarantined_file::Model> {
        let row = quarantined_file::ActiveModel {
            filename: ActiveValue::Set(record.filename),
            error_type: ActiveValue::Set(record.error_type),
            error_message: ActiveValue::Set(record.error_message),
            error_details_json: ActiveValue::Set(record.error_details_json),
            ..Default::default()
        };
        Ok(row.insert(conn).await?)
    }

    /// Every quarantined file, oldest first.
    ///
    /// # Errors
    /// The database's error.
    pub async fn quarantined_files(
        &self,
        conn: &impl ConnectionTrait,
    ) -> Result<Vec<quarantined_file::Model>> {
        Ok(QuarantinedFiles::find()
            .order_by_asc(quarantined_file::Column::Id)
            .all(conn)
            .await?)
    }

    /// Current exposures matching `filter`, newest `last_seen` first (then
    /// by office and exposure id, so pages are stable).
    ///
    /// # Errors
    /// The database's error.
    pub async fn current_exposures(
        &self,
        conn: &impl ConnectionTrait,
        filter: &ExposureFilter,
        page: Page,
    ) -> Result<Vec<exposure_current::Model>> {
        use exposure_current::Column as C;
        let mut query = ExposuresCurrent::find();
        if let Some(office) = &filter.office_id {
            query = query.filter(C::OfficeId.eq(office.as_str()));
        }
        if let Some(status) = filter.status {
            query = query.filter(C::Status.eq(status));
        }
        if let Some(severity) = filter.severity {
            query = query.filter(C::Severity.eq(severity));
        }
        if let Some(class) = &filter.exposure_class {
            query = query.filter(C::ExposureClass.eq(class.as_str()));
        }
        if let Some(from) = filter.last_seen_from {
            query = query.filter(C::LastSeen.gte(from));
        }
        if let Some(to) = filter.last_seen_to {
            query = query.filter(C::LastSeen.lt(to));
        }
        Ok(query
            .order_by_desc(C::LastSeen)
            .order_by_asc(C::OfficeId)
            .order_by_asc(C::ExposureId)
            .offset(page.offset)
            .limit(page.limit)
            .all(conn)
            .await?)
    }

    /// Current exposures counted by office, severity and status.
    ///
    /// # Errors
    /// The database's error.
    pub async fn exposure_counts(&self, conn: &impl ConnectionTrait) -> Result<ExposureCounts> {
        use exposure_current::Column as C;
        let mut by_severity = parse_keys(count_by(conn, C::Severity).await?)?;
        by_severity.sort_by_key(|&(severity, _): &(Severity, u64)| std::cmp::Reverse(severity));
        let mut by_status = parse_keys(count_by(conn, C::Status).await?)?;
        by_status.sort_by_key(|&(status, _): &(Status, u64)| status);
        Ok(ExposureCounts {
            by_office: count_by(conn, C::OfficeId).await?,
            by_severity,
            by_status,
        })
    }

    /// Row counts of the three tables.
    ///
    /// # Errors
    /// The database's error.
    pub async fn totals(&self, conn: &impl ConnectionTrait) -> Result<Totals> {
        Ok(Totals {
            events: ExposureEvents::find().count(conn).await?,
            exposures: ExposuresCurrent::find().count(conn).await?,
            quarantined_files: QuarantinedFiles::find().count(conn).await?,
        })
    }
}

/// A row of [`count_by`]. Not a partial model of `exposures_current`: the
/// column grouped by is chosen at run time and `n` is an aggregate, so
/// neither field is a fixed column of the entity.
#[derive(Debug, FromQueryResult)]
struct KeyCount {
    key: String,
    n: i64,
}

async fn count_by(
    conn: &impl ConnectionTrait,
    column: exposure_current::Column,
) -> Result<Vec<(String, u64)>> {
    let rows = ExposuresCurrent::find()
        .select_only()
        .column_as(column, "key")
        .column_as(column.count(), "n")
        .group_by(column)
        .order_by_asc(column)
        .into_model::<KeyCount>()
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.key, u64::try_from(r.n).unwrap_or(0)))
        .collect())
}

fn parse_keys<T: std::str::FromStr>(counts: Vec<(String, u64)>) -> Result<Vec<(T, u64)>>
where
    T::Err: std::fmt::Display,
{
    counts
        .into_iter()
        .map(|(k, n)| {
            k.parse()
                .map(|k| (k, n))
                .map_err(|e: T::Err| Error::Internal(e.to_string()))
        })
        .collect()
}
