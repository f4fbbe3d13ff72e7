//! An in-memory calendar with made-up events.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

/// Maximum length of an event title, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// Maximum number of attendees of one event.
const MAX_ATTENDEES: usize = 50;

/// Maximum number of events in the calendar, so that a client cannot fill the demo's memory.
const MAX_EVENTS: usize = 1000;

/// A calendar event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Event {
    /// Identifier such as `evt-3`.
    pub id: String,
    /// Short title.
    pub title: String,
    /// Start time, RFC 3339.
    pub start: String,
    /// End time, RFC 3339.
    pub end: String,
    /// Attendees' email addresses or names.
    pub attendees: Vec<String>,
}

/// Arguments of `calendar.create_event`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    /// Short title of the event.
    pub title: String,
    /// Start time, RFC 3339, such as `2030-01-15T09:00:00Z`.
    pub start: String,
    /// End time, RFC 3339, after the start.
    pub end: String,
    /// Attendees' email addresses or names.
    #[serde(default)]
    pub attendees: Vec<String>,
}

/// Arguments of `calendar.list_events`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListEvents {
    /// Only events starting on this day, `YYYY-MM-DD`, in the event's own UTC offset.
    #[serde(default)]
    pub day: Option<String>,
}

/// Arguments of `calendar.delete_event`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteEvent {
    /// Identifier of the event, as returned by `calendar.list_events`.
    pub id: String,
}

/// A list of events, as `calendar.list_events` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct EventList {
    /// The events, ordered by start time.
    pub events: Vec<Event>,
}

/// The calendar shared by every session of one demo server.
#[derive(Debug, Clone)]
pub struct Calendar {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    events: BTreeMap<u64, Event>,
    next_number: u64,
}

impl Default for Calendar {
    fn default() -> Self {
        Self::new()
    }
}

impl Calendar {
    /// Creates a calendar holding the same three sample events every time.
    pub fn new() -> Self {
        let samples = [
            (
                "Team stand-up",
                "2030-01-14T09:00:00Z",
                "2030-01-14T09:15:00Z",
                vec!["ana@example.com", "bo@example.com"],
            ),
            ("Quarterly planning", "2030-01-14T13:00:00Z", "2030-01-14T15:00:00Z", vec!["ana@example.com"]),
            ("Dentist", "2030-01-15T08:30:00+01:00", "2030-01-15T09:00:00+01:00", vec![]),
        ];
        let mut events = BTreeMap::new();
        for (number, (title, start, end, attendees)) in (1..).zip(samples) {
            let attendees = attendees.into_iter().map(str::to_owned).collect();
            let event = Event {
                id: event_id(number),
                title: title.to_owned(),
                start: start.to_owned(),
                end: end.to_owned(),
                attendees,
            };
            events.insert(number, event);
        }
        let next_number = events.len() as u64 + 1;
        Self { state: Arc::new(Mutex::new(State { events, next_number })) }
    }

    /// Checks and stores a new event, returning it with its id.
    pub fn create(&self, request: CreateEvent) -> Result<Event, String> {
        let title = request.title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
            return Err(format!("title must have 1 to {MAX_TITLE_CHARS} characters"));
        }
        let start = parse_time("start", &request.start)?;
        let end = parse_time("end", &request.end)?;
        if end <= start {
            return Err(format!("end `{}` must be after start `{}`", request.end, request.start));
        }
        let attendees = check_attendees(request.attendees)?;

        let mut state = self.lock();
        if state.events.len() >= MAX_EVENTS {
            return Err(format!("the demo calendar is full at {MAX_EVENTS} events; delete some first"));
        }
        let number = state.next_number;
        state.next_number += 1;
        let event = Event {
            id: event_id(number),
            title: title.to_owned(),
            start: format_time(start)?,
            end: format_time(end)?,
            attendees,
        };
        state.events.insert(number, event.clone());
        Ok(event)
    }

    /// Lists events by start time, only those starting on `day` when given.
    pub fn list(&self, request: &ListEvents) -> Result<EventList, String> {
        let day = request.day.as_deref().map(parse_day).transpose()?;
        let state = self.lock();

        let mut events: Vec<(OffsetDateTime, Event)> = Vec::new();
        for event in state.events.values() {
            let start = parse_time("start", &event.start)?;
            if day.is_none_or(|day| start.date() == day) {
                events.push((start, event.clone()));
            }
        }
        events.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        Ok(EventList { events: events.into_iter().map(|(_, event)| event).collect() })
    }

    /// Deletes an event, returning it.
    pub fn delete(&self, request: &DeleteEvent) -> Result<Event, String> {
        let number = request.id.strip_prefix("evt-").and_then(|number| number.parse::<u64>().ok());
        let removed = number.and_then(|number| self.lock().events.remove(&number));
        removed.ok_or_else(|| format!("no event has id `{}`; call `calendar.list_events` to see the ids", request.id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked, because every change is one insert or remove.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn event_id(number: u64) -> String {
    format!("evt-{number}")
}

fn parse_time(field: &str, text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|error| format!("{field} `{text}` is not an RFC 3339 time such as `2030-01-15T09:00:00Z`: {error}"))
}

fn format_time(time: OffsetDateTime) -> Result<String, String> {
    time.format(&Rfc3339).map_err(|error| format!("failed to format time: {error}"))
}

fn parse_day(text: &str) -> Result<Date, String> {
    Date::parse(text, format_description!("[year]-[month]-[day]"))
        .map_err(|error| format!("day `{text}` is not a date such as `2030-01-14`: {error}"))
}

fn check_attendees(attendees: Vec<String>) -> Result<Vec<String>, String> {
    if attendees.len() > MAX_ATTENDEES {
        return Err(format!("an event has at most {MAX_ATTENDEES} attendees"));
    }
    let attendees: Vec<String> = attendees.into_iter().map(|attendee| attendee.trim().to_owned()).collect();
    if attendees.iter().any(String::is_empty) {
        return Err("attendees must not be empty strings".to_owned());
    }
    Ok(attendees)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_request(start: &str, end: &str) -> CreateEvent {
        CreateEvent {
            title: "Review".to_owned(),
            start: start.to_owned(),
            end: end.to_owned(),
            attendees: vec!["ana@example.com".to_owned()],
        }
    }

    fn ids(list: &EventList) -> Vec<&str> {
        list.events.iter().map(|event| event.id.as_str()).collect()
    }

    #[test]
    fn new_calendar_holds_samples() -> Result<(), String> {
        let calendar = Calendar::new();
        assert_eq!(ids(&calendar.list(&ListEvents { day: None })?), ["evt-1", "evt-2", "evt-3"]);
        Ok(())
    }

    #[test]
    fn create_assigns_next_id_and_normalises_times() -> Result<(), String> {
        let calendar = Calendar::new();
        let event = calendar.create(create_request("2030-01-14T10:00:00.000Z", "2030-01-14T11:00:00Z"))?;
        assert_eq!(event.id, "evt-4");
        assert_eq!(event.start, "2030-01-14T10:00:00Z");

        let day = calendar.list(&ListEvents { day: Some("2030-01-14".to_owned()) })?;
        assert_eq!(ids(&day), ["evt-1", "evt-4", "evt-2"]);
        Ok(())
    }

    #[test]
    fn create_rejects_invalid_requests() {
        let calendar = Calendar::new();
        let cases = [
            (create_request("tomorrow", "2030-01-14T11:00:00Z"), "start `tomorrow` is not an RFC 3339 time"),
            (
                create_request("2030-01-14T11:00:00Z", "2030-01-14T10:00:00Z"),
                "end `2030-01-14T10:00:00Z` must be after start",
            ),
            (
                CreateEvent { title: " ".to_owned(), ..create_request("2030-01-14T10:00:00Z", "2030-01-14T11:00:00Z") },
                "title must have",
            ),
            (
                CreateEvent {
                    attendees: vec![String::new()],
                    ..create_request("2030-01-14T10:00:00Z", "2030-01-14T11:00:00Z")
                },
                "attendees must not be empty",
            ),
        ];
        for (request, expected) in cases {
            let error = calendar.create(request).err().unwrap_or_default();
            assert!(error.starts_with(expected), "error {error:?}, expected {expected:?}");
        }
    }

    #[test]
    fn delete_removes_event_once() -> Result<(), String> {
        let calendar = Calendar::new();
        let request = DeleteEvent { id: "evt-2".to_owned() };
        assert_eq!(calendar.delete(&request)?.title, "Quarterly planning");
        assert!(calendar.delete(&request).is_err());
        assert!(calendar.delete(&DeleteEvent { id: "2".to_owned() }).is_err());
        Ok(())
    }

    #[test]
    fn list_rejects_invalid_day() {
        let error = Calendar::new().list(&ListEvents { day: Some("14.01.2030".to_owned()) }).err();
        assert!(error.is_some_and(|error| error.starts_with("day `14.01.2030` is not a date")));
    }
}
