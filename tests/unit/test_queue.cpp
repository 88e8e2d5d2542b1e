// tests/unit/test_queue.cpp — the durable mail queue (gateway/queue).
//
// Every test gets a fresh directory and a real RocksDB store. Corruption is
// made by writing into the store directly with RocksDB after the queue is
// closed. QueueBenchmark prints a commit rate and asserts nothing about time.
#include "gateway/queue/queue.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <vector>

namespace postvault::queue {
namespace {

namespace fs = std::filesystem;

fs::path make_temp_directory() {
    std::string pattern = (fs::temp_directory_path() / "postvault-queue-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    return pattern;
}

Envelope make_envelope(std::vector<std::string> recipients) {
    Envelope envelope;
    envelope.mail_from = "sender@example.org";
    envelope.recipients = std::move(recipients);
    envelope.received_unix = 1700000000;
    envelope.session.client_ip = "192.0.2.10";
    envelope.session.client_port = 40123;
    envelope.session.helo = "client.example.org";
    return envelope;
}

std::string make_message(std::size_t size, unsigned seed) {
    std::string message = "Subject: test " + std::to_string(seed) + "\r\n\r\n";
    std::mt19937 random(seed);
    while (message.size() < size) message += static_cast<char>('a' + random() % 26);
    return message;
}

// Raw access to the queue's RocksDB, with every column family, for tests that
// corrupt or inspect records. Only used while no Queue has the store open.
class RawStore {
public:
    explicit RawStore(const fs::path& directory) {
        std::vector<std::string> names;
        EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), directory, &names).ok());
        std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
        for (const auto& name : names) descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
        rocksdb::Options options;
        rocksdb::DB* db = nullptr;
        const auto status = rocksdb::DB::Open(options, directory, descriptors, &handles_, &db);
        EXPECT_TRUE(status.ok()) << status.ToString();
        db_.reset(db);
        for (std::size_t i = 0; i < names.size(); ++i) by_name_[names[i]] = handles_[i];
    }
    ~RawStore() {
        for (auto* handle : handles_) db_->DestroyColumnFamilyHandle(handle);
        EXPECT_TRUE(db_->Close().ok());
    }
    void put(const std::string& column, const std::string& key, const std::string& value) {
        ASSERT_TRUE(db_->Put(rocksdb::WriteOptions(), by_name_.at(column), key, value).ok());
    }
    void remove(const std::string& column, const std::string& key) {
        ASSERT_TRUE(db_->Delete(rocksdb::WriteOptions(), by_name_.at(column), key).ok());
    }
    std::optional<std::string> get(const std::string& column, const std::string& key) {
        std::string value;
        if (!db_->Get(rocksdb::ReadOptions(), by_name_.at(column), key, &value).ok()) return std::nullopt;
        return value;
    }
    std::vector<std::string> keys(const std::string& column) {
        std::vector<std::string> keys;
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), by_name_.at(column)));
        for (it->SeekToFirst(); it->Valid(); it->Next()) keys.push_back(it->key().ToString());
        return keys;
    }

private:
    std::unique_ptr<rocksdb::DB> db_;
    std::vector<rocksdb::ColumnFamilyHandle*> handles_;
    std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name_;
};

class QueueTest : public ::testing::Test {
protected:
    void SetUp() override { directory_ = make_temp_directory() / "queue"; }
    void TearDown() override {
        queue_.reset();
        std::error_code ignored;
        fs::remove_all(directory_.parent_path(), ignored);
    }

    Queue& open(std::uint64_t min_free_disk = 0) {
        queue_.reset();
        auto opened = Queue::open(QueueOptions{directory_.string(), min_free_disk});
        EXPECT_TRUE(opened.ok()) << (opened.ok() ? "" : opened.error().message);
        queue_ = std::move(*opened);
        return *queue_;
    }
    void close() { queue_.reset(); }

    std::string commit(std::vector<std::string> recipients, const std::string& message = "Subject: x\r\n\r\nbody\r\n") {
        const std::string id = make_queue_id();
        const Status committed = queue_->commit_and_wait(id, make_envelope(std::move(recipients)), message);
        EXPECT_TRUE(committed.ok()) << (committed.ok() ? "" : committed.error().message);
        return id;
    }

    fs::path directory_;
    std::unique_ptr<Queue> queue_;
};

void expect_error(const Status& status, const std::string& code, ErrorClass error_class) {
    ASSERT_FALSE(status.ok());
    EXPECT_EQ(status.error().code, code) << status.error().message;
    EXPECT_EQ(status.error().error_class, error_class);
}

template <typename T>
void expect_error(const Result<T>& result, const std::string& code, ErrorClass error_class) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error().code, code) << result.error().message;
    EXPECT_EQ(result.error().error_class, error_class);
}

TEST_F(QueueTest, OpenCreatesPrivateDirectory) {
    open();
    EXPECT_EQ(fs::status(directory_).permissions() & fs::perms::all, fs::perms::owner_all);
}

TEST_F(QueueTest, CommitThenLoadRoundTripsExactBytes) {
    Queue& queue = open();
    std::string message = "Subject: binary\r\n\r\n";
    for (int byte = 0; byte < 256; ++byte) message += static_cast<char>(byte);
    message += std::string("\0\0tail\r\n.\r\n", 11);
    const std::string id = commit({"a@example.com", "b@example.net"}, message);

    const auto bytes = queue.load_message(id);
    ASSERT_TRUE(bytes.ok());
    EXPECT_EQ(*bytes, message);
    const auto loaded = queue.load(id);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    EXPECT_EQ(loaded->id, id);
    EXPECT_EQ(loaded->size, message.size());
    ASSERT_EQ(loaded->recipients.size(), 2u);
    for (std::uint32_t i = 0; i < 2; ++i) {
        EXPECT_EQ(loaded->recipients[i].index, i);
        EXPECT_EQ(loaded->recipients[i].address, loaded->envelope.recipients[i]);
        EXPECT_EQ(loaded->recipients[i].state, RecipientState::pending);
        EXPECT_EQ(loaded->recipients[i].attempts, 0u);
    }

    close();
    Queue& reopened = open();
    const auto after_reopen = reopened.load_message(id);
    ASSERT_TRUE(after_reopen.ok());
    EXPECT_EQ(*after_reopen, message);
}

TEST_F(QueueTest, HandlingPerRecipientRoundTripsAndQuarantineStartsHeld) {
    Queue& queue = open();
    Handling encrypt;
    encrypt.encrypt = {"pgp", "smime"};
    encrypt.fallback = "hold";
    encrypt.sign = true;
    encrypt.notify = true;
    encrypt.rule = "cards";
    Handling review;
    review.quarantine = true;
    review.require_tls = true;
    review.rule = "review";
    const std::string id = make_queue_id();
    std::promise<Status> written;
    queue.commit(id, make_envelope({"a@example.com", "b@example.net", "c@example.org"}), "Subject: x\r\n\r\nb\r\n",
                 [&](Status status) { written.set_value(status); }, {encrypt, review, Handling{}});
    ASSERT_TRUE(written.get_future().get().ok());

    close();
    open();
    auto loaded = queue_->load(id);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    EXPECT_EQ(loaded->recipients[0].handling, encrypt);
    EXPECT_EQ(loaded->recipients[0].state, RecipientState::pending);
    EXPECT_EQ(loaded->recipients[1].handling, review);
    EXPECT_EQ(loaded->recipients[1].state, RecipientState::held);
    EXPECT_EQ(loaded->recipients[1].last_reply, "held: quarantined by policy rule review");
    EXPECT_EQ(loaded->recipients[2].handling, Handling{});

    // Delivered with a method: kept. Release makes the held one pending, its quarantine lifted.
    RecipientStatus first = loaded->recipients[0];
    first.state = RecipientState::delivered;
    first.method = "pgp";
    ASSERT_TRUE(queue_->update(id, {first}).ok());
    auto released = queue_->release(id);
    ASSERT_TRUE(released.ok()) << released.error().message;
    EXPECT_EQ(*released, 1u);
    auto after = queue_->load(id);
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after->recipients[0].method, "pgp");
    EXPECT_EQ(after->recipients[1].state, RecipientState::pending);
    EXPECT_FALSE(after->recipients[1].handling.quarantine);
    EXPECT_TRUE(after->recipients[1].handling.require_tls);
    expect_error(queue_->release(id), "queue.not_held", ErrorClass::permanent);
    expect_error(queue_->release("NOSUCHID"), "queue.not_found", ErrorClass::permanent);

    // A handling list that does not match the recipients is refused.
    std::promise<Status> refused;
    queue_->commit(make_queue_id(), make_envelope({"a@example.com"}), "x",
                 [&](Status status) { refused.set_value(status); }, {encrypt, review});
    expect_error(refused.get_future().get(), "queue.bad_recipient", ErrorClass::permanent);
}

TEST_F(QueueTest, EnvelopeFieldsRoundTrip) {
    Queue& queue = open();
    Envelope envelope;
    envelope.mail_from = "";  // null sender
    // The second and third recipients are BCC: they exist only in the envelope.
    envelope.recipients = {"to@example.com", "bcc-only@example.net", "jürgen@bücher.example"};
    envelope.smtputf8 = true;
    envelope.body_8bit = true;
    envelope.declared_size = 123456;
    envelope.received_unix = 1712345678;
    envelope.session.client_ip = "2001:db8::1";
    envelope.session.client_port = 65535;
    const char helo[] = "bad\xff\xfe helo\0x";  // not UTF-8, with a NUL: kept verbatim
    envelope.session.helo = std::string(helo, sizeof helo - 1);
    envelope.session.tls_version = "TLSv1.3";
    envelope.session.tls_cipher = "TLS_AES_256_GCM_SHA384";
    envelope.session.auth_user = "alice";
    envelope.session.trusted = true;
    const std::string id = make_queue_id();
    ASSERT_TRUE(queue.commit_and_wait(id, envelope, "x").ok());

    close();
    const auto loaded = open().load(id);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    const Envelope& got = loaded->envelope;
    EXPECT_EQ(got.mail_from, "");
    EXPECT_EQ(got.recipients, envelope.recipients);
    EXPECT_TRUE(got.smtputf8);
    EXPECT_TRUE(got.body_8bit);
    EXPECT_EQ(got.declared_size, 123456u);
    EXPECT_EQ(got.received_unix, 1712345678);
    EXPECT_EQ(got.session.client_ip, "2001:db8::1");
    EXPECT_EQ(got.session.client_port, 65535);
    EXPECT_EQ(got.session.helo, envelope.session.helo);
    EXPECT_EQ(got.session.tls_version, "TLSv1.3");
    EXPECT_EQ(got.session.tls_cipher, "TLS_AES_256_GCM_SHA384");
    EXPECT_EQ(got.session.auth_user, "alice");
    EXPECT_TRUE(got.session.trusted);
    ASSERT_EQ(loaded->recipients.size(), 3u);
    EXPECT_EQ(loaded->recipients[2].address, "jürgen@bücher.example");
}

TEST_F(QueueTest, MissingReceivedTimeIsFilledIn) {
    Queue& queue = open();
    Envelope envelope = make_envelope({"a@example.com"});
    envelope.received_unix = 0;
    const std::string id = make_queue_id();
    ASSERT_TRUE(queue.commit_and_wait(id, envelope, "x").ok());
    EXPECT_GT(queue.load(id)->envelope.received_unix, 1600000000);
}

TEST_F(QueueTest, CallbackRunsOnceAfterTheWriteOnAnotherThread) {
    Queue& queue = open();
    const std::string id = make_queue_id();
    std::mutex mutex;
    std::condition_variable called;
    int calls = 0;
    bool visible_in_callback = false;
    std::thread::id callback_thread;
    queue.commit(id, make_envelope({"a@example.com"}), "body", [&](Status status) {
        EXPECT_TRUE(status.ok());
        // The write is complete (and synced) before the callback: readable now.
        const bool visible = queue.load(id).ok() && queue.load_message(id).ok();
        std::lock_guard lock(mutex);
        visible_in_callback = visible;
        callback_thread = std::this_thread::get_id();
        ++calls;
        called.notify_all();
    });
    std::unique_lock lock(mutex);
    ASSERT_TRUE(called.wait_for(lock, std::chrono::seconds(10), [&] { return calls > 0; }));
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    lock.lock();
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(visible_in_callback);
    EXPECT_NE(callback_thread, std::this_thread::get_id());
}

TEST_F(QueueTest, ErrorsAlsoArriveThroughTheCallback) {
    Queue& queue = open();
    std::promise<Status> result;
    queue.commit(make_queue_id(), make_envelope({}), "body",
                 [&](Status status) { result.set_value(std::move(status)); });
    expect_error(result.get_future().get(), "queue.no_recipients", ErrorClass::permanent);
}

TEST_F(QueueTest, CallbackMustNotWaitOnTheQueue) {
    Queue& queue = open();
    std::promise<Status> nested;
    queue.commit(make_queue_id(), make_envelope({"a@example.com"}), "body", [&](Status) {
        nested.set_value(queue.commit_and_wait(make_queue_id(), make_envelope({"b@example.com"}), "x"));
    });
    expect_error(nested.get_future().get(), "queue.reentrant", ErrorClass::permanent);
}

TEST_F(QueueTest, ConcurrentCommitsAllPresentAfterReopen) {
    Queue& queue = open();
    constexpr int kThreads = 20;
    constexpr int kPerThread = 40;
    std::mutex mutex;
    std::map<std::string, std::string> committed;  // id -> bytes
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kPerThread; ++i) {
                const std::string id = make_queue_id();
                const std::string message = make_message(2000 + i * 97, t * 1000 + i);
                Status status;
                if (i % 2 == 0) {
                    status = queue.commit_and_wait(id, make_envelope({"r" + std::to_string(t) + "@example.com"}), message);
                } else {
                    std::promise<Status> done;
                    queue.commit(id, make_envelope({"a@example.com", "b@example.com"}), message,
                                 [&done](Status s) { done.set_value(std::move(s)); });
                    status = done.get_future().get();
                }
                if (!status.ok()) {
                    ++failures;
                    continue;
                }
                std::lock_guard lock(mutex);
                committed[id] = message;
            }
        });
    }
    for (auto& thread : threads) thread.join();
    ASSERT_EQ(failures.load(), 0);
    ASSERT_EQ(committed.size(), static_cast<std::size_t>(kThreads * kPerThread));

    close();
    Queue& reopened = open();
    const auto listed = reopened.list();
    ASSERT_EQ(listed.size(), committed.size());
    for (const auto& [id, message] : committed) {
        const auto bytes = reopened.load_message(id);
        ASSERT_TRUE(bytes.ok()) << id;
        EXPECT_EQ(*bytes, message);
    }
    EXPECT_TRUE(reopened.list_quarantined().empty());
}

TEST_F(QueueTest, UpdateRecordsDeferralFields) {
    Queue& queue = open();
    const std::string id = commit({"a@example.com", "b@example.com"});
    RecipientStatus change;
    change.index = 1;
    change.state = RecipientState::deferred;
    change.attempts = 3;
    change.next_attempt_unix = 1800000000;
    change.updated_unix = 1799999000;
    change.last_reply = "451 4.7.1 try again \xe9t\xe9";  // Latin-1 from a remote server
    change.remote_host = "mx.example.com[192.0.2.25]:25";
    change.tls_version = "TLSv1.2";
    change.tls_cipher = "ECDHE-RSA-AES128-GCM-SHA256";
    ASSERT_TRUE(queue.update(id, {change}).ok());

    close();
    const auto loaded = open().load(id);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    const RecipientStatus& untouched = loaded->recipients[0];
    EXPECT_EQ(untouched.state, RecipientState::pending);
    EXPECT_EQ(untouched.attempts, 0u);
    const RecipientStatus& got = loaded->recipients[1];
    EXPECT_EQ(got.index, 1u);
    EXPECT_EQ(got.address, "b@example.com");
    EXPECT_EQ(got.state, RecipientState::deferred);
    EXPECT_EQ(got.attempts, 3u);
    EXPECT_EQ(got.next_attempt_unix, 1800000000);
    EXPECT_EQ(got.updated_unix, 1799999000);
    EXPECT_EQ(got.last_reply, change.last_reply);
    EXPECT_EQ(got.remote_host, change.remote_host);
    EXPECT_EQ(got.tls_version, "TLSv1.2");
    EXPECT_EQ(got.tls_cipher, change.tls_cipher);
    EXPECT_FALSE(got.dsn_sent);
}

TEST_F(QueueTest, PartialDeliveryKeepsTheMessage) {
    Queue& queue = open();
    const std::string id = commit({"a@example.com", "b@example.com", "c@example.com"});
    RecipientStatus delivered;
    delivered.index = 0;
    delivered.state = RecipientState::delivered;
    delivered.attempts = 1;
    delivered.last_reply = "250 2.0.0 ok";
    RecipientStatus bounced;
    bounced.index = 2;
    bounced.state = RecipientState::bounced;
    bounced.attempts = 1;
    bounced.last_reply = "550 5.1.1 no such user";
    bounced.dsn_sent = true;
    ASSERT_TRUE(queue.update(id, {delivered, bounced}).ok());

    const auto loaded = queue.load(id);
    ASSERT_TRUE(loaded.ok());
    EXPECT_EQ(loaded->recipients[0].state, RecipientState::delivered);
    EXPECT_EQ(loaded->recipients[0].last_reply, "250 2.0.0 ok");
    EXPECT_GT(loaded->recipients[0].updated_unix, 0);  // filled in when not given
    EXPECT_EQ(loaded->recipients[1].state, RecipientState::pending);
    EXPECT_EQ(loaded->recipients[2].state, RecipientState::bounced);
    EXPECT_TRUE(loaded->recipients[2].dsn_sent);
    EXPECT_TRUE(queue.load_message(id).ok());
}

TEST_F(QueueTest, MessageDeletedWhenAllRecipientsFinal) {
    Queue& queue = open();
    const std::string id = commit({"a@example.com", "b@example.com"});
    const std::string other = commit({"c@example.com"});
    RecipientStatus first;
    first.index = 0;
    first.state = RecipientState::delivered;
    ASSERT_TRUE(queue.update(id, {first}).ok());
    ASSERT_TRUE(queue.load(id).ok());
    RecipientStatus second;
    second.index = 1;
    second.state = RecipientState::bounced;
    ASSERT_TRUE(queue.update(id, {second}).ok());

    expect_error(queue.load(id), "queue.not_found", ErrorClass::permanent);
    expect_error(queue.load_message(id), "queue.not_found", ErrorClass::permanent);
    const auto listed = queue.list();
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].id, other);

    close();
    RawStore raw(directory_);
    for (const char* column : {"messages", "envelopes", "recipients"}) {
        for (const auto& key : raw.keys(column)) EXPECT_EQ(key.rfind(id, 0), std::string::npos) << column << " " << key;
    }
}

TEST_F(QueueTest, NewMessagesCommittedWithTheUpdate) {
    Queue& queue = open();
    const std::string id = commit({"gone@example.com"});
    RecipientStatus bounced;
    bounced.index = 0;
    bounced.state = RecipientState::bounced;
    bounced.last_reply = "550 5.1.1 unknown";
    bounced.dsn_sent = true;
    Queue::NewMessage dsn{make_queue_id(), make_envelope({"sender@example.org"}), "Subject: Undelivered\r\n\r\n..."};
    dsn.envelope.mail_from = "";
    ASSERT_TRUE(queue.update(id, {bounced}, {dsn}).ok());

    expect_error(queue.load(id), "queue.not_found", ErrorClass::permanent);
    const auto loaded = queue.load(dsn.id);
    ASSERT_TRUE(loaded.ok());
    EXPECT_EQ(loaded->envelope.mail_from, "");
    EXPECT_EQ(loaded->recipients.at(0).state, RecipientState::pending);
    EXPECT_EQ(*queue.load_message(dsn.id), dsn.message);
}

TEST_F(QueueTest, FailedUpdateChangesNothing) {
    Queue& queue = open();
    const std::string id = commit({"a@example.com"});
    RecipientStatus delivered;
    delivered.index = 0;
    delivered.state = RecipientState::delivered;
    Queue::NewMessage bad{"not/valid", make_envelope({"x@example.com"}), "x"};
    expect_error(queue.update(id, {delivered}, {bad}), "queue.bad_id", ErrorClass::permanent);
    RecipientStatus out_of_range;
    out_of_range.index = 7;
    expect_error(queue.update(id, {delivered, out_of_range}), "queue.bad_recipient", ErrorClass::permanent);

    const auto loaded = queue.load(id);
    ASSERT_TRUE(loaded.ok());
    EXPECT_EQ(loaded->recipients[0].state, RecipientState::pending);
    EXPECT_EQ(queue.list().size(), 1u);
}

TEST_F(QueueTest, FinalStateIsNotReopened) {
    Queue& queue = open();
    const std::string id = commit({"a@example.com", "b@example.com"});
    RecipientStatus delivered;
    delivered.index = 0;
    delivered.state = RecipientState::delivered;
    ASSERT_TRUE(queue.update(id, {delivered}).ok());
    RecipientStatus deferred = delivered;
    deferred.state = RecipientState::deferred;
    expect_error(queue.update(id, {deferred}), "queue.final_state", ErrorClass::permanent);
    EXPECT_EQ(queue.load(id)->recipients[0].state, RecipientState::delivered);
}

TEST_F(QueueTest, ConcurrentUpdatesOfOneMessageDeleteIt) {
    Queue& queue = open();
    constexpr std::uint32_t kRecipients = 16;
    std::vector<std::string> recipients;
    for (std::uint32_t i = 0; i < kRecipients; ++i) recipients.push_back("r" + std::to_string(i) + "@example.com");
    const std::string id = commit(recipients);
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (std::uint32_t i = 0; i < kRecipients; ++i) {
        threads.emplace_back([&, i] {
            RecipientStatus delivered;
            delivered.index = i;
            delivered.state = RecipientState::delivered;
            if (!queue.update(id, {delivered}).ok()) ++failures;
        });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(failures.load(), 0);
    expect_error(queue.load(id), "queue.not_found", ErrorClass::permanent);
    EXPECT_TRUE(queue.list().empty());
}

TEST_F(QueueTest, RemoveDeletesEveryRecord) {
    Queue& queue = open();
    const std::string id = commit({"a@example.com", "b@example.com"});
    ASSERT_TRUE(queue.remove(id).ok());
    expect_error(queue.load(id), "queue.not_found", ErrorClass::permanent);
    expect_error(queue.load_message(id), "queue.not_found", ErrorClass::permanent);
    expect_error(queue.remove(id), "queue.not_found", ErrorClass::permanent);
    EXPECT_TRUE(queue.list().empty());
    close();
    RawStore raw(directory_);
    EXPECT_TRUE(raw.keys("recipients").empty());
    EXPECT_TRUE(raw.keys("messages").empty());
}

TEST_F(QueueTest, UnknownIdIsNotFound) {
    Queue& queue = open();
    const std::string id = make_queue_id();
    expect_error(queue.load(id), "queue.not_found", ErrorClass::permanent);
    expect_error(queue.load_message(id), "queue.not_found", ErrorClass::permanent);
    expect_error(queue.update(id, {}), "queue.not_found", ErrorClass::permanent);
    expect_error(queue.remove(id), "queue.not_found", ErrorClass::permanent);
}

TEST_F(QueueTest, RejectsBadCommits) {
    Queue& queue = open();
    expect_error(queue.commit_and_wait("", make_envelope({"a@example.com"}), "x"), "queue.bad_id",
                 ErrorClass::permanent);
    expect_error(queue.commit_and_wait("A/B", make_envelope({"a@example.com"}), "x"), "queue.bad_id",
                 ErrorClass::permanent);
    expect_error(queue.commit_and_wait(make_queue_id(), make_envelope({}), "x"), "queue.no_recipients",
                 ErrorClass::permanent);
    const std::string id = commit({"a@example.com"});
    expect_error(queue.commit_and_wait(id, make_envelope({"b@example.com"}), "y"), "queue.duplicate_id",
                 ErrorClass::permanent);
    EXPECT_EQ(queue.load(id)->recipients[0].address, "a@example.com");
}

TEST_F(QueueTest, ConcurrentCommitsOfOneIdStoreOne) {
    Queue& queue = open();
    for (int round = 0; round < 20; ++round) {
        const std::string id = make_queue_id();
        std::promise<Status> first, second;
        queue.commit(id, make_envelope({"a@example.com"}), "first", [&](Status s) { first.set_value(s); });
        queue.commit(id, make_envelope({"b@example.com"}), "second", [&](Status s) { second.set_value(s); });
        const Status a = first.get_future().get();
        const Status b = second.get_future().get();
        ASSERT_NE(a.ok(), b.ok());
        expect_error(a.ok() ? b : a, "queue.duplicate_id", ErrorClass::permanent);
        EXPECT_EQ(*queue.load_message(id), a.ok() ? "first" : "second");
    }
}

TEST_F(QueueTest, ListIsOldestFirst) {
    Queue& queue = open();
    std::vector<std::string> ids;
    for (int i = 0; i < 30; ++i) {
        ids.push_back(make_queue_id());
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    std::vector<std::string> shuffled = ids;
    std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(7));
    for (const auto& id : shuffled) ASSERT_TRUE(queue.commit_and_wait(id, make_envelope({"a@example.com"}), id).ok());
    const auto listed = queue.list();
    ASSERT_EQ(listed.size(), ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(listed[i].id, ids[i]);
}

TEST_F(QueueTest, QuarantinesCorruptRecipientRecord) {
    open();
    const std::string good = commit({"a@example.com"});
    const std::string bad = commit({"b@example.com", "c@example.com"}, "the bad one's bytes");
    close();
    const char garbage_bytes[] = "{\"index\":1,\0\xff garbage";
    const std::string garbage(garbage_bytes, sizeof garbage_bytes - 1);
    {
        RawStore raw(directory_);
        const auto keys = raw.keys("recipients");
        ASSERT_EQ(keys.size(), 3u);
        raw.put("recipients", keys[2], garbage);  // bad's second recipient
    }

    Queue& queue = open();
    const auto listed = queue.list();
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].id, good);
    const auto quarantined = queue.list_quarantined();
    ASSERT_EQ(quarantined.size(), 4u);  // envelope, message, two recipient records
    std::set<std::string> keys;
    for (const auto& record : quarantined) {
        keys.insert(record.key);
        EXPECT_NE(record.reason.find(bad), std::string::npos) << record.reason;
        EXPECT_NE(record.reason.find("unreadable"), std::string::npos) << record.reason;
        EXPECT_GT(record.quarantined_unix, 0);
    }
    EXPECT_TRUE(keys.count("envelopes/" + bad));
    EXPECT_TRUE(keys.count("messages/" + bad));
    EXPECT_TRUE(keys.count("recipients/" + bad + "/0000000001"));
    expect_error(queue.load(bad), "queue.not_found", ErrorClass::permanent);
    EXPECT_TRUE(queue.load(good).ok());
    EXPECT_EQ(queue.list().size(), 1u);  // nothing more to quarantine
    EXPECT_EQ(queue.list_quarantined().size(), 4u);

    close();
    RawStore raw(directory_);
    const auto record = raw.get("quarantine", "recipients/" + bad + "/0000000001");
    ASSERT_TRUE(record.has_value());
    // The bytes are kept exactly (base64 in the record).
    EXPECT_NE(record->find("\"bytes_base64\":\"eyJpbmRleCI6MSwA/yBnYXJiYWdl\""), std::string::npos) << *record;
    EXPECT_FALSE(raw.get("messages", bad).has_value());
}

TEST_F(QueueTest, QuarantinesMessageWithoutEnvelope) {
    open();
    const std::string orphan = commit({"a@example.com"});
    close();
    {
        RawStore raw(directory_);
        raw.remove("envelopes", orphan);
    }
    Queue& queue = open();
    EXPECT_TRUE(queue.list().empty());
    const auto quarantined = queue.list_quarantined();
    ASSERT_EQ(quarantined.size(), 2u);
    EXPECT_EQ(quarantined[0].key, "messages/" + orphan);
    EXPECT_NE(quarantined[0].reason.find("envelope missing"), std::string::npos);
    EXPECT_EQ(quarantined[1].key, "recipients/" + orphan + "/0000000000");
}

TEST_F(QueueTest, LoadQuarantinesCorruptEnvelope) {
    open();
    const std::string id = commit({"a@example.com"});
    close();
    {
        RawStore raw(directory_);
        raw.put("envelopes", id, "{not json");
    }
    Queue& queue = open();
    expect_error(queue.load(id), "queue.corrupt", ErrorClass::permanent);
    expect_error(queue.load(id), "queue.not_found", ErrorClass::permanent);
    EXPECT_EQ(queue.list_quarantined().size(), 3u);
    RecipientStatus change;
    expect_error(queue.update(id, {change}), "queue.not_found", ErrorClass::permanent);
}

TEST_F(QueueTest, UpdateQuarantinesWhenARecipientRecordIsMissing) {
    open();
    const std::string id = commit({"a@example.com", "b@example.com"});
    close();
    {
        RawStore raw(directory_);
        raw.remove("recipients", id + "/0000000001");
    }
    Queue& queue = open();
    RecipientStatus delivered;
    delivered.state = RecipientState::delivered;
    expect_error(queue.update(id, {delivered}), "queue.corrupt", ErrorClass::permanent);
    EXPECT_EQ(queue.list_quarantined().size(), 3u);
}

TEST_F(QueueTest, DiskFullRefusesCommitsButNotOutcomes) {
    open();
    const std::string id = commit({"a@example.com", "b@example.com"});
    Queue& queue = open(std::numeric_limits<std::uint64_t>::max());
    EXPECT_FALSE(queue.disk_has_room());
    expect_error(queue.commit_and_wait(make_queue_id(), make_envelope({"a@example.com"}), "x"),
                 "queue.disk_full", ErrorClass::temporary);
    RecipientStatus delivered;
    delivered.index = 0;
    delivered.state = RecipientState::delivered;
    EXPECT_TRUE(queue.update(id, {delivered}).ok());  // frees space: allowed
    RecipientStatus bounced;
    bounced.index = 1;
    bounced.state = RecipientState::bounced;
    Queue::NewMessage dsn{make_queue_id(), make_envelope({"sender@example.org"}), "dsn"};
    // Outcomes and the DSN they bring are recorded even below the floor:
    // refusing them would make delivered mail go out again on every retry.
    EXPECT_TRUE(queue.update(id, {bounced}, {dsn}).ok());
    ASSERT_EQ(queue.list().size(), 1u);
    EXPECT_EQ(queue.list()[0].id, dsn.id);

    EXPECT_TRUE(open(1).disk_has_room());
}

TEST_F(QueueTest, DestructorDrainsPendingCommits) {
    open();
    constexpr int kCommits = 200;
    std::atomic<int> succeeded{0};
    std::vector<std::string> ids;
    for (int i = 0; i < kCommits; ++i) {
        ids.push_back(make_queue_id());
        queue_->commit(ids.back(), make_envelope({"a@example.com"}), make_message(10240, i),
                       [&](Status status) { succeeded += status.ok() ? 1 : 0; });
    }
    close();  // returns only after every callback ran
    EXPECT_EQ(succeeded.load(), kCommits);
    Queue& queue = open();
    EXPECT_EQ(queue.list().size(), static_cast<std::size_t>(kCommits));
    for (int i = 0; i < kCommits; ++i) EXPECT_EQ(*queue.load_message(ids[i]), make_message(10240, i));
}

TEST_F(QueueTest, SecondOpenOfTheSameDirectoryFails) {
    open();
    auto second = Queue::open(QueueOptions{directory_.string(), 0});
    expect_error(second, "queue.io", ErrorClass::temporary);
}

// The child process commits, then kills itself with SIGKILL: no destructor,
// no clean close, only the synced WAL. Every acknowledged write must be back.
TEST(QueueCrash, AcknowledgedCommitsSurviveSigkill) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    // The threadsafe style re-runs this test in a child process; the child
    // finds the directory chosen by the parent in the environment.
    const char* inherited = std::getenv("POSTVAULT_QUEUE_CRASH_DIR");
    const fs::path root = inherited ? fs::path(inherited) : make_temp_directory();
    if (!inherited) ::setenv("POSTVAULT_QUEUE_CRASH_DIR", root.c_str(), 1);
    const std::string directory = (root / "queue").string();
    constexpr int kCommits = 50;

    EXPECT_EXIT(
        {
            auto queue = Queue::open(QueueOptions{directory, 0});
            if (!queue.ok()) std::_Exit(2);
            for (int i = 0; i < kCommits; ++i) {
                const std::string id = "CRASH" + std::to_string(1000 + i);
                if (!(*queue)->commit_and_wait(id, make_envelope({"a@example.com", "b@example.com"}),
                                               make_message(10240, i)).ok())
                    std::_Exit(3);
            }
            RecipientStatus delivered;
            delivered.index = 0;
            delivered.state = RecipientState::delivered;
            if (!(*queue)->update("CRASH1000", {delivered}).ok()) std::_Exit(4);
            for (int i = 0; i < 20; ++i)  // unacknowledged: may or may not survive
                (*queue)->commit(make_queue_id(), make_envelope({"c@example.com"}), make_message(10240, i), {});
            ::raise(SIGKILL);
        },
        ::testing::KilledBySignal(SIGKILL), "");
    ::unsetenv("POSTVAULT_QUEUE_CRASH_DIR");

    {
        auto reopened = Queue::open(QueueOptions{directory, 0});
        ASSERT_TRUE(reopened.ok()) << reopened.error().message;
        Queue& queue = **reopened;
        for (int i = 0; i < kCommits; ++i) {
            const std::string id = "CRASH" + std::to_string(1000 + i);
            const auto bytes = queue.load_message(id);
            ASSERT_TRUE(bytes.ok()) << id;
            EXPECT_EQ(*bytes, make_message(10240, i));
        }
        EXPECT_EQ(queue.load("CRASH1000")->recipients[0].state, RecipientState::delivered);
        EXPECT_GE(queue.list().size(), static_cast<std::size_t>(kCommits));
        EXPECT_TRUE(queue.list_quarantined().empty());  // no half-written message
    }
    std::error_code ignored;
    fs::remove_all(root, ignored);
}

TEST(QueueId, FormatAndUniquenessAcrossThreads) {
    constexpr int kThreads = 8;
    constexpr int kPerThread = 20000;
    std::vector<std::vector<std::string>> ids(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&ids, t] {
            for (int i = 0; i < kPerThread; ++i) ids[t].push_back(make_queue_id());
        });
    }
    for (auto& thread : threads) thread.join();
    std::set<std::string> unique;
    for (const auto& batch : ids) {
        for (const auto& id : batch) {
            ASSERT_EQ(id.size(), 20u);
            ASSERT_TRUE(std::all_of(id.begin(), id.end(),
                                    [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'); }))
                << id;
            unique.insert(id);
        }
    }
    EXPECT_EQ(unique.size(), static_cast<std::size_t>(kThreads * kPerThread));
}

TEST(QueueId, OrderedByTime) {
    std::string previous = make_queue_id();
    for (int i = 0; i < 50; ++i) {
        std::this_thread::sleep_for(std::chrono::microseconds(20));
        const std::string next = make_queue_id();
        EXPECT_LT(previous, next);
        previous = next;
    }
}

TEST(QueueState, Names) {
    EXPECT_STREQ(to_string(RecipientState::pending), "pending");
    EXPECT_STREQ(to_string(RecipientState::deferred), "deferred");
    EXPECT_STREQ(to_string(RecipientState::delivered), "delivered");
    EXPECT_STREQ(to_string(RecipientState::bounced), "bounced");
}

// Prints commits per second with 20 threads, each waiting for its own synced
// commit of a 10 KB message, as SMTP sessions do. Asserts nothing about time.
TEST(QueueBenchmark, ConcurrentCommitRate) {
    const fs::path root = make_temp_directory();
    {
        auto opened = Queue::open(QueueOptions{(root / "queue").string(), 0});
        ASSERT_TRUE(opened.ok());
        Queue& queue = **opened;
        constexpr int kThreads = 20;
        constexpr int kPerThread = 50;
        const std::string message = make_message(10240, 1);
        std::atomic<int> failures{0};
        const auto start = std::chrono::steady_clock::now();
        std::vector<std::thread> threads;
        for (int t = 0; t < kThreads; ++t) {
            threads.emplace_back([&] {
                for (int i = 0; i < kPerThread; ++i)
                    if (!queue.commit_and_wait(make_queue_id(), make_envelope({"a@example.com"}), message).ok())
                        ++failures;
            });
        }
        for (auto& thread : threads) thread.join();
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        EXPECT_EQ(failures.load(), 0);
        std::printf("[ queue    ] %d synced commits of 10 KB from %d threads: %.0f commits/s\n",
                    kThreads * kPerThread, kThreads, kThreads * kPerThread / seconds);
    }
    std::error_code ignored;
    fs::remove_all(root, ignored);
}

}  // namespace
}  // namespace postvault::queue
