// A small Kafka admin for the fault suite, run as a single source file
// (`java -cp '<kafka.sh classpath>/*' TopicAdmin.java BOOTSTRAP`): it reads
// commands on stdin, one per line, and answers each with one line on
// stdout that starts with "@@ " followed by JSON (anything else on stdout
// is the client library's logging and is ignored by the suite).
//
//   describe TOPIC   {"ok":true,"partitions":[{"partition":0,"leader":2,"replicas":[2,3,1],"isr":[2,3,1]}]}
//                    (leader -1: none); {"ok":false,"error":"..."} when no broker answers in time
//   quit             exits
//
// One JVM for the whole suite: a JVM start costs seconds on a loaded
// two-core machine, and the suite asks after every fault.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;

public class TopicAdmin {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        props.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "100");
        try (Admin admin = Admin.create(props);
             BufferedReader in = new BufferedReader(new InputStreamReader(System.in))) {
            String line;
            while ((line = in.readLine()) != null) {
                String[] words = line.trim().split("\\s+");
                if (words.length == 0 || words[0].isEmpty()) continue;
                if (words[0].equals("quit")) break;
                String answer;
                try {
                    if (words[0].equals("describe") && words.length == 2) {
                        answer = describe(admin, words[1]);
                    } else {
                        answer = error("unknown command: " + line);
                    }
                } catch (Exception e) {
                    Throwable cause = e.getCause() != null ? e.getCause() : e;
                    answer = error(cause.getClass().getSimpleName() + ": " + cause.getMessage());
                }
                System.out.println("@@ " + answer);
                System.out.flush();
            }
        }
    }

    static String describe(Admin admin, String topic) throws Exception {
        TopicDescription description = admin
            .describeTopics(List.of(topic), new DescribeTopicsOptions().timeoutMs(5000))
            .allTopicNames()
            .get(6, TimeUnit.SECONDS)
            .get(topic);
        StringBuilder out = new StringBuilder("{\"ok\":true,\"partitions\":[");
        boolean first = true;
        for (TopicPartitionInfo partition : description.partitions()) {
            if (!first) out.append(',');
            first = false;
            Node leader = partition.leader();
            out.append("{\"partition\":").append(partition.partition())
                .append(",\"leader\":").append(leader == null || leader.isEmpty() ? -1 : leader.id())
                .append(",\"replicas\":").append(ids(partition.replicas()))
                .append(",\"isr\":").append(ids(partition.isr()))
                .append('}');
        }
        return out.append("]}").toString();
    }

    static String ids(List<Node> nodes) {
        return nodes.stream().map(node -> Integer.toString(node.id())).collect(Collectors.joining(",", "[", "]"));
    }

    static String error(String message) {
        return "{\"ok\":false,\"error\":\"" + message.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", " ") + "\"}";
    }
}
