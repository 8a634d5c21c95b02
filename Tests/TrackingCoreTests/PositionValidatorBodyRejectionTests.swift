import Foundation
import Testing
import TrackingCore

@Suite("PositionValidator: malformed and wrongly typed bodies")
struct PositionValidatorBodyRejectionTests {
    @Test("text that is not JSON, or not an object or array, is 400 malformed_json", arguments: [
        "", "   \n", "{", #"{"latitude": 52.5,"#, "not json", "42", #""a string""#, "null", #"{"latitude": 1}}"#,
    ])
    func malformed(body: String) throws {
        let error = try #require(PositionFixtures.rejection(body))
        #expect(error.status == 400)
        #expect(error.code == "malformed_json")
        #expect(error.field == nil)
    }

    @Test("a wrongly typed field is 422 naming it", arguments: [
        ("latitude", #""52.5""#), ("longitude", "true"), ("timestamp", "1800000000"), ("speed", #""fast""#),
        ("heading", "[90]"), ("battery", #"{"level": 5}"#), ("booking_id", "42"), ("attributes", "[1, 2]"),
        ("attributes", #""text""#),
    ])
    func wrongType(field: String, value: String) throws {
        let error = try #require(PositionFixtures.rejection(PositionFixtures.object([field: value])))
        #expect(error.status == 422)
        #expect(error.code == "validation_failed")
        #expect(error.field == field)
        #expect(error.index == nil)
    }

    @Test("a wrongly typed field inside an array names the index too")
    func wrongTypeInArray() throws {
        let body = PositionFixtures.array([PositionFixtures.object(), PositionFixtures.object(["latitude": #""x""#])])
        let error = try #require(PositionFixtures.rejection(body))
        #expect(error.status == 422)
        #expect(error.field == "latitude")
        #expect(error.index == 1)
    }

    @Test("an array element that is not an object is 422 naming its index")
    func nonObjectElement() throws {
        let body = "[" + PositionFixtures.object() + ", 1]"
        let error = try #require(PositionFixtures.rejection(body))
        #expect(error.status == 422)
        #expect(error.index == 1)
        #expect(error.field == nil)
    }

    @Test("attributes holding U+0000 (which jsonb cannot store) are 422 naming the string that holds it")
    func nulInAttributes() throws {
        let error = try #require(PositionFixtures.rejection(PositionFixtures.object(["attributes": #"{"note": {"deep": ["a\u0000b"]}}"#])))
        #expect(error.status == 422)
        #expect(error.field == "attributes.note.deep[0]", "the path of the string that holds it")
    }

    @Test("an empty array is 422")
    func emptyArray() throws {
        let error = try #require(PositionFixtures.rejection("[]"))
        #expect(error.status == 422)
        #expect(error.index == nil)
    }

    @Test("more than 1,000 elements is 422 and says the limit")
    func oversizedBatch() throws {
        let body = PositionFixtures.array(Array(repeating: PositionFixtures.object(), count: PositionValidator.maxBatchSize + 1))
        let error = try #require(PositionFixtures.rejection(body))
        #expect(error.status == 422)
        #expect(error.message.contains("1000"))
        #expect(error.message.contains("1001"))
    }

    @Test("the error body is the documented JSON envelope")
    func envelope() throws {
        let error = try #require(PositionFixtures.rejection(PositionFixtures.array([PositionFixtures.object(["speed": "-2"])])))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(error.jsonBody.utf8)) as? [String: Any])
        let inner = try #require(object["error"] as? [String: Any])
        #expect(inner["code"] as? String == "validation_failed")
        #expect(inner["field"] as? String == "speed")
        #expect(inner["index"] as? Int == 0)
        #expect((inner["message"] as? String)?.isEmpty == false)
    }
}
